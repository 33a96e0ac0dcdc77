"""RIB (Lee et al., "Reducing Information Bottleneck for Weakly Supervised Semantic Segmentation", NeurIPS'21).

CAM method ``rib``: per-image fine-tuning of the trained classifier, then the CAMs of every fine-tuning step
are summed. For one image with classes K, starting each time from the trained weights, ``rib_iter`` (10)
SGD steps (poly decay; backbone lr ``rib_lr`` = 8e-6, classifier 10×, weight decay 1e-4) minimise

    L = − Σ_{k∈K} GNDP_k(target views) − Σ_b Σ_{k∈y_b} GNDP_k(disjoint image b),

a **raw logit** loss (no sigmoid, the bottleneck RIB removes) over the target image and its flip plus
``rib_batch`` (20) random training images sharing none of its classes. GNDP is global average pooling
restricted to the non-discriminative region: ``GNDP_k = mean_{x,y} M_k · 1[M_k / max M_k < score_th]``
(score_th 0.4; the mask is not differentiated). Fine-tuning stops early when the summed target logit
exceeds ``stop_th`` (600) or the CAM "explodes": more than ``explode_ratio`` (0.7) of the pixels above
``explode_th`` (0.3) of the max for some class. The returned map is the sum of ReLU'd CAMs of all steps.

Deviations, for cost, all switchable:

- ``tune: last_block`` (default) fine-tunes the backbone's last block and the classifier, with the input to
  that block computed once per image; ``tune: all`` fine-tunes every layer as RIB does. With RIB's learning
  rate the earlier layers barely move, and full fine-tuning costs ≈ 10 forward+backward passes of 22
  images per image.
- Each call of the method fine-tunes on the views it is given (one scale: the image and its flip); with
  several CAM scales each scale is fine-tuned on its own (RIB uses one fine-tuning whose loss sees three
  scales). ``cam.batch_size`` must be 1 so that a call holds one image and the classes are its own.
- The disjoint images come from a pool of ``pool_images`` training images (resized to ``pool_size``, not
  re-augmented), whose last-block inputs are computed once in ``prepare``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from scarce.cams.base import CamConfig, CamMethod, register_cam_method
from scarce.config import from_dict
from scarce.errors import ConfigError
from scarce.models.classifier import CamModel, last_map

TUNE_MODES = ("last_block", "all")


@dataclass(frozen=True)
class RibOptions:
    rib_iter: int = 10
    rib_lr: float = 8e-6
    head_lr_mult: float = 10.0
    weight_decay: float = 1e-4
    poly_power: float = 0.9
    rib_batch: int = 20
    score_th: float = 0.4
    stop_th: float = 600.0
    explode_th: float = 0.3
    explode_ratio: float = 0.7
    tune: str = "last_block"
    pool_images: int = 256
    pool_size: int | None = None  # side of the pooled disjoint images; None: the first training image's size
    seed: int = 0


def gndp(maps: torch.Tensor, labels: torch.Tensor, score_th: float) -> torch.Tensor:
    """Pooling over the non-discriminative region: (N, C, h, w) maps, (N, C) multi-hot → (N, C) logits.

    For a labelled class the pixels whose map, divided by its max, is ≥ ``score_th`` are left out (the mask
    carries no gradient); other classes are plainly averaged. The sum is divided by all h·w pixels, as RIB does.
    """
    norm = (maps / maps.amax(dim=(2, 3), keepdim=True)).detach()
    norm = torch.where(labels[:, :, None, None] > 0, norm, torch.full_like(norm, -1.0))
    return (maps * (norm < score_th).to(maps.dtype)).mean(dim=(2, 3))


def split_features(model: CamModel, mode: str) -> tuple[Callable[[torch.Tensor], torch.Tensor], nn.Module,
                                                          Callable[[nn.Module, torch.Tensor], torch.Tensor]]:
    """(prefix, tail, run_tail): ``run_tail(tail, prefix(x))`` equals ``model.features(x)``."""
    if mode not in TUNE_MODES:
        raise ConfigError(f"rib: tune must be one of {TUNE_MODES}, got {mode!r}")
    backbone = getattr(model, "backbone", None)
    if backbone is None:
        raise ConfigError("rib: needs a CamClassifier (a timm backbone with a 1x1 classifier)")
    if mode == "all":
        return (lambda x: x), backbone, lambda tail, h: last_map(tail(h))
    if not all(hasattr(backbone, a) for a in ("conv_stem", "bn1", "blocks")):
        raise ConfigError("rib: tune 'last_block' needs a timm EfficientNet/MobileNet backbone; use tune: all")

    def prefix(x: torch.Tensor) -> torch.Tensor:
        x = backbone.bn1(backbone.conv_stem(x))
        for block in list(backbone.blocks)[:-1]:
            x = block(x)
        return x

    # with feature_layer "head" the CAM layer is after the 1×1 conv_head + BN: the tuned tail includes them
    head = [m for m in (getattr(backbone, "conv_head", None), getattr(backbone, "bn2", None)) if isinstance(m, nn.Module)]
    tail = nn.Sequential(backbone.blocks[-1], *head) if head else backbone.blocks[-1]
    return prefix, tail, lambda tail, h: tail(h)


@register_cam_method("rib")
class Rib(CamMethod):
    needs_grad = True

    def __init__(self, cfg: CamConfig, options: RibOptions | None = None) -> None:
        super().__init__(cfg)
        self.options = options or from_dict(RibOptions, dict(getattr(cfg, "options", {}) or {}), "cam.options")
        if self.options.tune not in TUNE_MODES:
            raise ConfigError(f"rib: tune must be one of {TUNE_MODES}, got {self.options.tune!r}")
        if cfg.batch_size != 1:
            raise ConfigError("CAM method 'rib' fine-tunes per image: set cam.batch_size to 1")
        self.pool_inputs: torch.Tensor | None = None
        self.pool_labels: torch.Tensor | None = None
        self.rng = np.random.default_rng(self.options.seed)
        self.steps_taken: list[int] = []

    def prepare(self, model: CamModel, train_set, work_dir: Path) -> None:
        """Pick the pool of candidate disjoint images and compute their inputs to the tuned part once."""
        from scarce.training.transforms import to_tensor

        opts = self.options
        prefix, _, _ = split_features(model, opts.tune)
        order = np.random.default_rng(opts.seed).permutation(len(train_set.samples))[: opts.pool_images]
        inputs, labels = [], []
        size: tuple[int, int] | None = (opts.pool_size, opts.pool_size) if opts.pool_size else None
        model.eval()
        with torch.no_grad():
            for start in range(0, len(order), 16):
                batch = []
                for index in order[start : start + 16]:
                    sample = train_set.samples[int(index)]
                    image = to_tensor(train_set.load_image(sample), model.mean_std)
                    size = size or tuple(image.shape[-2:])
                    if tuple(image.shape[-2:]) != size:
                        image = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False)[0]
                    batch.append(image)
                    labels.append(torch.from_numpy(train_set.label_vector(sample)))
                inputs.append(prefix(torch.stack(batch)))
        self.pool_inputs = torch.cat(inputs)
        self.pool_labels = torch.stack(labels)

    def __call__(self, model: CamModel, images: torch.Tensor, classes: Sequence[int] | None = None) -> torch.Tensor:
        opts = self.options
        if self.pool_inputs is None or self.pool_labels is None:
            raise ConfigError("CAM method 'rib' has no pool of disjoint images: call prepare(model, train_set, work_dir)")
        num_classes = model.class_weights.shape[0]
        picked = list(range(num_classes)) if classes is None else list(classes)
        prefix, tail, run_tail = split_features(model, opts.tune)
        with torch.no_grad():
            start = prefix(images.detach())
        if not picked:
            with torch.no_grad():
                return images.new_zeros(len(images), 0, *run_tail(tail, start).shape[-2:])
        tuned = copy.deepcopy(tail)
        for p in tuned.parameters():
            p.requires_grad_(True)
        weight = nn.Parameter(model.class_weights.detach().clone())
        optimizer = torch.optim.SGD([
            {"params": list(tuned.parameters()), "lr": opts.rib_lr, "base_lr": opts.rib_lr},
            {"params": [weight], "lr": opts.rib_lr * opts.head_lr_mult, "base_lr": opts.rib_lr * opts.head_lr_mult},
        ], lr=opts.rib_lr, momentum=0.0, weight_decay=opts.weight_decay)
        target_labels = torch.zeros(len(images), num_classes)
        target_labels[:, picked] = 1.0
        disjoint = torch.nonzero((self.pool_labels[:, picked] == 0).all(dim=1)).flatten()
        total = None
        steps = 0
        tuned.eval()  # BatchNorm statistics stay frozen, as in RIB (IRN's frozen BN)
        for step in range(opts.rib_iter):
            for group in optimizer.param_groups:
                group["lr"] = group["base_lr"] * (1.0 - step / opts.rib_iter) ** opts.poly_power
            maps = torch.einsum("cd,bdhw->bchw", weight, run_tail(tuned, start))
            current = F.relu(maps[:, picked]).detach()
            total = current if total is None else total + current
            steps = step + 1
            if step > 0 and self._exploded(current):
                break
            target = (gndp(maps, target_labels, opts.score_th) * target_labels).sum()
            loss = -target
            if len(disjoint) and opts.rib_batch > 0:
                chosen = disjoint[torch.from_numpy(self.rng.choice(len(disjoint), size=opts.rib_batch,
                                                                   replace=len(disjoint) < opts.rib_batch))]
                other = torch.einsum("cd,bdhw->bchw", weight, run_tail(tuned, self.pool_inputs[chosen]))
                other_labels = self.pool_labels[chosen]
                loss = loss - (gndp(other, other_labels, opts.score_th) * other_labels).sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if abs(float(target.detach())) > opts.stop_th:
                break
        self.steps_taken.append(steps)
        assert total is not None
        return total

    def _exploded(self, maps: torch.Tensor) -> bool:
        """RIB's stop rule on the first view: the share of pixels where some class exceeds explode_th of its max."""
        first = maps[0]
        norm = first / (first.amax(dim=(1, 2), keepdim=True) + 1e-5)
        covered = (norm > self.options.explode_th).any(dim=0).float().mean()
        return bool(covered > self.options.explode_ratio)
