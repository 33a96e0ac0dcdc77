"""The CAM core: class activation maps of all classes of a batch in one pass per scale.

A :class:`CamMethod` supplies only the raw class maps of a batch at one scale (the pytorch-grad-cam
idea: each method supplies its weights). Everything else is shared and follows the IRN template
(``make_cam``): each scale is run on [image, flipped image]; the ReLU'd maps of the pair are combined as
``m + flip(m_flipped)``; scales are resized bilinearly to the image size and **summed**; maps are then
restricted to the classes asked for and normalised (per-class max by default, as IRN: ``m / (max m + 1e-5)``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F

from scarce.errors import ConfigError
from scarce.data.base import WeakDataset
from scarce.models.classifier import CamModel
from scarce.models.nwc import with_nwc

NORMALIZATIONS = ("max", "minmax", "percentile", "none")


@dataclass(frozen=True)
class CamConfig:
    method: str = "cam"
    scales: tuple[float, ...] = (1.0, 0.5, 1.5, 2.0)
    flip: bool = True
    normalize: str = "max"
    percentile: float = 98.0
    clamp_negative_weights: bool = False  # NWC (Bae et al.): ignore negatively weighted channels
    layer: str | None = None  # Grad-CAM target module (dotted name); None = the model's last feature map
    batch_size: int = 8
    options: dict[str, Any] = field(default_factory=dict)  # method-specific settings (see each method's docstring)


class CamMethod:
    """Raw (pre-ReLU) class maps of a batch at one scale: images (B, 3, h, w) → (B, K, h', w').

    ``classes`` restricts the maps to those class indices (in that order); None means all classes. With
    ``cfg.flip`` the batch holds the images followed by their mirror images (the core's [x; flip(x)]).
    """

    name = "base"
    needs_grad = False
    # under torchrun: prepare runs in every rank at once and splits its work itself (LPCAM); otherwise rank 0
    # prepares first and the other ranks after it (scarce.distributed.prepare_on_ranks)
    shards_prepare = False

    def __init__(self, cfg: CamConfig) -> None:
        self.cfg = cfg

    def __call__(self, model: CamModel, images: torch.Tensor, classes: Sequence[int] | None = None) -> torch.Tensor:
        raise NotImplementedError

    def views(self, model: CamModel, views: Sequence[torch.Tensor], scales: Sequence[float],
              classes: Sequence[int] | None = None) -> list[torch.Tensor]:
        """Raw maps of every scale's batch (``views[i]`` at ``scales[i]``); one call per scale by default.

        A method whose work couples the scales (RIB fine-tunes once on all of them) overrides this.
        """
        return [self(model, view, classes) for view in views]

    def rectify(self, maps: torch.Tensor, classes: Sequence[int] | None = None) -> torch.Tensor:
        """The ReLU the core applies to each view's maps before summing; LPCAM skips it for some classes."""
        return F.relu(maps)

    def prepare(self, model: CamModel, train_set: "WeakDataset", work_dir: Path) -> None:
        """Fit whatever the method learns from the training split (e.g. LPCAM's prototypes); default: nothing.

        Under torchrun it is called through :func:`scarce.distributed.prepare_on_ranks` (see ``shards_prepare``).
        """

    def begin_images(self, names: Sequence[str]) -> None:
        """Called by the CAM writer before each batch with its images' names (default: nothing). A method that
        draws at random (RIB) seeds its draws for an image from its name, so that the image gets the same
        draws whatever was computed before it: in a resumed run, or on another rank under torchrun."""

    def take_notes(self) -> list[dict[str, Any]]:
        """What the method recorded about each image of its calls since the last take, in order (default:
        nothing). The CAM writer stores each image's notes in its CAM file (:mod:`scarce.cams.store`)."""
        return []


CAM_METHODS: dict[str, Callable[[CamConfig], CamMethod]] = {}


def register_cam_method(name: str) -> Callable[[type[CamMethod]], type[CamMethod]]:
    def add(cls: type[CamMethod]) -> type[CamMethod]:
        CAM_METHODS[name] = cls
        cls.name = name
        return cls

    return add


def build_cam_method(cfg: CamConfig) -> CamMethod:
    if cfg.method not in CAM_METHODS:
        raise ConfigError(f"unknown CAM method {cfg.method!r}; available: {', '.join(sorted(CAM_METHODS))}")
    if cfg.normalize not in NORMALIZATIONS:
        raise ConfigError(f"unknown CAM normalisation {cfg.normalize!r}; choose from {', '.join(NORMALIZATIONS)}")
    return CAM_METHODS[cfg.method](cfg)


def multiscale_cams(model: CamModel, images: torch.Tensor, method: CamMethod, scales: Sequence[float],
                    flip: bool = True, classes: Sequence[int] | None = None) -> torch.Tensor:
    """Summed multi-scale (+flip) ReLU'd maps at the input size: (B, 3, H, W) → (B, K, H, W)."""
    if not scales:
        raise ConfigError("cam.scales is empty: at least one scale is needed")
    size = images.shape[-2:]
    views = []
    for scale in scales:
        x = images if scale == 1.0 else F.interpolate(
            images, size=(round(size[0] * scale), round(size[1] * scale)), mode="bilinear", align_corners=False)
        views.append(torch.cat([x, x.flip(-1)]) if flip else x)
    with torch.set_grad_enabled(method.needs_grad):
        raw = method.views(model, views, scales, classes)
    total = torch.zeros(())
    for maps in raw:
        maps = method.rectify(maps.detach(), classes)
        if flip:
            half = len(images)
            maps = maps[:half] + maps[half:].flip(-1)
        total = total + F.interpolate(maps, size=size, mode="bilinear", align_corners=False)
    return total


def normalize_cams(cams: torch.Tensor, how: str = "max", percentile: float = 98.0, eps: float = 1e-5) -> torch.Tensor:
    """Normalise each map of (..., H, W) on its own.

    - ``max``: m / (max m + eps) (IRN);
    - ``minmax``: (m − min) / (max − min + eps) (wsolevaluation's ``normalize_scoremap``);
    - ``percentile``: m / (P_p(m) + eps), clipped to [0, 1] (PaS, Bae et al.: the percentile is a steadier
      standard than the maximum);
    - ``none``: raw values.
    """
    if how == "none":
        return cams
    flat = cams.flatten(-2)
    if how == "max":
        scale = flat.amax(-1)
        out = flat / (scale.unsqueeze(-1) + eps)
    elif how == "minmax":
        low, high = flat.amin(-1, keepdim=True), flat.amax(-1, keepdim=True)
        out = (flat - low) / (high - low + eps)
    elif how == "percentile":
        ref = torch.quantile(flat.float(), percentile / 100.0, dim=-1, keepdim=True).to(flat.dtype)
        out = (flat / (ref + eps)).clamp(0.0, 1.0)
    else:
        raise ConfigError(f"unknown CAM normalisation {how!r}; choose from {', '.join(NORMALIZATIONS)}")
    return out.view_as(cams)


class CamExtractor:
    """Computes normalised CAMs for batches of same-sized images with one configured method."""

    def __init__(self, model: CamModel, cfg: CamConfig, method: CamMethod | None = None) -> None:
        # NWC clamps the model's head, so that every method (Grad-CAM included) sees the clamped weights
        self.model = with_nwc(model, cfg.clamp_negative_weights).eval()
        self.cfg = cfg
        self.method = method or build_cam_method(cfg)

    def __call__(self, images: torch.Tensor, classes: Sequence[int] | None = None) -> torch.Tensor:
        """(B, 3, H, W) → (B, K, H, W) maps of ``classes`` (all when None), normalised per map."""
        raw = multiscale_cams(self.model, images, self.method, self.cfg.scales, self.cfg.flip, classes)
        return normalize_cams(raw, self.cfg.normalize, self.cfg.percentile)
