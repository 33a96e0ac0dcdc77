"""SCG: self-correlation map generation (RecurSeed, Jo et al., Algorithm 1; after SPA, Pan et al. CVPR'21).

For every feature level l (RecurSeed: the five stages C1–C5 of the backbone, all resized to the stride-8 map
of C3) with unit-normalised features f_i:

    SC¹_l[i, j] = ReLU(cos(f_i, f_j)),     S²_l[i, j] = 1/HW · Σ_k cos(f_i, f_k) · cos(f_k, f_j),
    SC²_l[i, :] = min-max normalisation of S²_l[i, :] over j,
    HSC = 1/L · Σ_l max(SC¹_l, SC²_l),

and for each class map M:  M_scg = ReLU(mean_{i: M_i > δ_h} HSC[i, :] − mean_{i: M_i < δ_l} HSC[i, :]).

Where the paper leaves a detail open, this follows the released code around it:

- δ_h = 0.30 and δ_l = 0.05 are RecurSeed's ``foreground_th`` / ``background_th`` (``infer_rsepm.py``);
- RecurSeed's code also declares ``first_th`` 0.50 and ``second_th`` 0.10 for SCG, whose function it does not
  release. SPA's ``hsc`` (the code SCG comes from) sets correlations below such thresholds to 0; they are applied
  that way here, to SC¹ and to the min-max-normalised SC² (both then in [0, 1]); 0 and 0 give the paper's formula;
- the CAM is resized to the correlation map bilinearly (SPA: ``cv2.resize``), features with ``nearest`` (the
  default ``interpolation`` of ``infer_rsepm.py``), the result back to the image bilinearly;
- the output is min-max normalised per class, as SPA's ``get_topk_boxes_hier_sim`` ends; a class with no pixel
  above δ_h gets an all-zero map (SPA: an empty selection contributes 0).

S² is never formed as an (HW)² product: row block b of it is (F_b · FᵀF) · Fᵀ / HW with the C×C Gram matrix FᵀF,
so memory is ``chunk`` × HW per level.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from scarce.errors import ConfigError
from scarce.refinement.base import RefineContext, Refiner, register_refiner
from scarce.refinement.pamr import check_batch

NORM_EPS = 1e-10  # SPA's guard when normalising features and min-max ranges


def _min_max(x: torch.Tensor, dim: int) -> torch.Tensor:
    low = x.amin(dim=dim, keepdim=True)
    return (x - low) / (x.amax(dim=dim, keepdim=True) - low + NORM_EPS)


def self_correlation_map(features: Sequence[torch.Tensor], cams: torch.Tensor, foreground: float = 0.30,
                         background: float = 0.05, first_threshold: float = 0.50, second_threshold: float = 0.10,
                         chunk: int = 1024) -> torch.Tensor:
    """(C_l, h, w) feature maps of one image and its (K, h, w) CAMs → (K, h, w) SCG maps in [0, 1]."""
    classes, height, width = cams.shape
    n = height * width
    flat = cams.reshape(classes, n)
    regions = torch.stack([(flat > foreground), (flat < background)]).to(features[0].dtype)  # (2, K, n)
    sums = torch.zeros(2, classes, n, dtype=features[0].dtype, device=features[0].device)
    for level in features:
        f = level.reshape(level.shape[0], n).T  # (n, C)
        f = f / (f.norm(dim=1, keepdim=True) + NORM_EPS)
        gram = f.T @ f
        for start in range(0, n, chunk):
            rows = f[start:start + chunk]
            first = torch.relu(rows @ f.T)
            first = first.masked_fill(first < first_threshold, 0.0)
            second = _min_max((rows @ gram) @ f.T / n, dim=1)
            second = second.masked_fill(second < second_threshold, 0.0)
            sums += regions[:, :, start:start + chunk] @ torch.maximum(first, second)
    means = sums / len(features) / regions.sum(dim=2, keepdim=True).clamp_min(1.0)
    out = torch.relu(means[0] - means[1])
    return _min_max(out, dim=1).reshape(classes, height, width)


def level_modules(backbone: nn.Module, levels: Sequence[int] | None) -> list[nn.Module]:
    """The modules whose outputs are timm's feature levels (``feature_info``), picked by index."""
    info = getattr(backbone, "feature_info", None)
    info = getattr(info, "info", info)  # features_only models wrap the list in a FeatureInfo
    if not info:
        raise ConfigError(f"refine scg: {type(backbone).__name__} has no feature_info to read feature levels from")
    picked = list(range(len(info))) if levels is None else list(levels)
    if not picked or any(not -len(info) <= i < len(info) for i in picked):
        raise ConfigError(f"refine scg: levels {picked} outside the backbone's {len(info)} feature levels")
    modules = dict(backbone.named_modules())
    found = []
    for i in picked:
        name = info[i]["module"]
        module = modules.get(name, modules.get(name.replace(".", "_")))
        if module is None:
            raise ConfigError(f"refine scg: feature level {i} ({name}) is not a module of {type(backbone).__name__}")
        found.append(module)
    return found


@register_refiner("scg")
class ScgRefiner(Refiner):
    """Options (RecurSeed's values): ``foreground`` δ_h 0.30, ``background`` δ_l 0.05, ``first_threshold``
    0.50, ``second_threshold`` 0.10, ``levels`` (indices into the backbone's timm ``feature_info``; default all,
    as RecurSeed's C1–C5), ``stride`` 8 (the C3 map the levels are resized to), ``interpolation`` ``nearest``,
    ``chunk`` 1024 rows of the correlation matrix at a time (memory only; the output does not depend on it).
    On the 128-px scenes stride 8 gives a 16×16 correlation map, the resolution RecurSeed computes SCG at."""

    OPTIONS = ("foreground", "background", "first_threshold", "second_threshold", "levels", "stride",
               "interpolation", "chunk")

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        super().__init__(options)
        unknown = set(self.options) - set(self.OPTIONS)
        if unknown:
            raise ConfigError(f"refine scg: unknown option(s) {sorted(unknown)}; known: {', '.join(self.OPTIONS)}")
        get = self.options.get
        self.foreground = float(get("foreground", 0.30))
        self.background = float(get("background", 0.05))
        self.first_threshold = float(get("first_threshold", 0.50))
        self.second_threshold = float(get("second_threshold", 0.10))
        levels = get("levels")
        self.levels = None if levels is None else [int(i) for i in levels]
        self.stride = int(get("stride", 8))
        self.interpolation = str(get("interpolation", "nearest"))
        self.chunk = int(get("chunk", 1024))
        if not self.background < self.foreground:
            raise ConfigError(f"refine scg: need background < foreground, got {self.background} ≥ {self.foreground}")
        if self.stride < 1 or self.chunk < 1:
            raise ConfigError(f"refine scg: stride and chunk must be ≥ 1, got {self.stride}, {self.chunk}")
        if self.interpolation not in ("nearest", "bilinear"):
            raise ConfigError(f"refine scg: interpolation must be nearest or bilinear, got {self.interpolation!r}")
        self.model: nn.Module | None = None
        self._levels: list[nn.Module] = []

    def prepare(self, context: RefineContext) -> None:
        """Bind the trained classifier: SCG correlates its backbone's features."""
        self.model = context.model
        self._levels = level_modules(context.model.backbone, self.levels)

    def level_features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """(B, 3, H, W) RGB in [0, 1] → one (B, C_l, H/stride, W/stride) map per level, read by forward hooks."""
        if self.model is None:
            raise ConfigError("refine scg: prepare(context) must bind the classifier before refining")
        mean, std = (torch.tensor(v, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
                     for v in self.model.mean_std)
        captured: list[torch.Tensor] = []
        hooks = [module.register_forward_hook(lambda _m, _i, out: captured.append(out)) for module in self._levels]
        device = next(self.model.parameters()).device
        try:
            with torch.no_grad():
                self.model.features(((images - mean) / std).to(device))
        finally:
            for hook in hooks:
                hook.remove()
        return self.resize_levels(captured, images.shape[2:])

    def resize_levels(self, levels: Sequence[torch.Tensor], image_size: Sequence[int]) -> list[torch.Tensor]:
        """Backbone maps of (H, W) images → the (H/stride, W/stride) grid SCG correlates on."""
        size = (math.ceil(image_size[0] / self.stride), math.ceil(image_size[1] / self.stride))
        return [F.interpolate(level.detach().float(), size=size, mode=self.interpolation,
                              **({} if self.interpolation == "nearest" else {"align_corners": False}))
                for level in levels]

    def refine_features(self, levels: Sequence[torch.Tensor], cams: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """SCG of each image's (K_i, H, W) maps on level features already computed (:meth:`resize_levels`):
        what :meth:`__call__` does after its own forward pass, for a caller (single-stage training) that has
        the features of the batch at hand."""
        out = []
        for i, cam in enumerate(cams):
            if cam.shape[0] == 0:
                out.append(cam.clone())
                continue
            small = F.interpolate(cam[None].detach().float().to(levels[0].device), size=levels[0].shape[2:],
                                  mode="bilinear", align_corners=False)[0]
            with torch.no_grad():
                maps = self_correlation_map([level[i] for level in levels], small, self.foreground, self.background,
                                            self.first_threshold, self.second_threshold, self.chunk)
            full = F.interpolate(maps[None], size=cam.shape[1:], mode="bilinear", align_corners=False)[0]
            out.append(full.clamp(0.0, 1.0).to(cam.device, cam.dtype))
        return out

    def __call__(self, images: torch.Tensor, cams: Sequence[torch.Tensor],
                 keys: Sequence[Sequence[int]]) -> list[torch.Tensor]:
        check_batch(images, cams, keys)
        if not len(cams):
            return []
        return self.refine_features(self.level_features(images), cams)
