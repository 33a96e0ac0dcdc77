"""AdvCAM (Lee et al., "Anti-Adversarially Manipulated Attributions for WSSS", CVPR'21; TPAMI'22).

CAM method ``advcam``: for every (image, class c) pair the image climbs the gradient of

    J(x) = y_c(x) − Σ_{k≠c} y_k(x) − λ · Σ_{(i,j)} M_{ij} · |A_c(x)_{ij} − A_c(x⁰)_{ij}|,
    x ← clip(x + ξ · ∇J / ‖∇J‖_∞),   clipped to the current image's value range,

where A_c = relu(CAM_c) on the feature grid, y are the class scores and M marks the pixels whose
max-normalised A_c exceeds ``score_th`` (the already discriminative region, recomputed at every step as in
AdvCAM's code) so that they do not keep growing. The map of the pair is the **sum** of A_c over the
``adv_iter`` steps (x⁰ … x^{T−1}). Defaults are AdvCAM's: 27 steps, λ = 7, ξ = 0.08, score_th = 0.5.

The scores y: AdvCAM's code (``obtain_CAM_masking.py``) climbs y_k = mean over the grid of relu(CAM_k)
(``logits: relu_cam``, the default), not the classifier's logits (``logits: classifier``; the paper's equation
reads as either). The difference matters: a logit (mean of the raw map plus bias) also rises when negative
context regions turn less negative and falls without bound when the other classes' maps turn negative, so
the normalised step spends its budget there; relu'd scores only grow with positive evidence for c and stop
pushing a class k once its map is nowhere positive.

AdvCAM halves the steps (and doubles the map) at its smallest scale; set ``base_size`` (the side of the
scale-1 images) to do the same for every image smaller than that. The penalty is a *sum* over the feature
grid as in AdvCAM (a 10×10 grid weighs it ten times less against the logits than VOC's 32×32).

Each pair is climbed separately: the cost is ``adv_iter`` forward+backward passes per (image, class) and
scale (AdvCAM: 316 CAM units). The core asks for the union of a batch's classes, so ``cam.batch_size: 1``
avoids climbing for classes an image does not have. Gradients (with respect to the input only) are
enabled by the core (``needs_grad``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from scarce.cams.base import CamConfig, CamMethod, register_cam_method
from scarce.config import from_dict
from scarce.errors import ConfigError
from scarce.models.classifier import CamModel


@dataclass(frozen=True)
class AdvcamOptions:
    adv_iter: int = 27
    ad_coeff: float = 7.0
    ad_stepsize: float = 0.08
    score_th: float = 0.5
    base_size: int | None = None  # images with a longer side below it get adv_iter // 2 steps, map × 2
    logits: str = "relu_cam"  # the scores climbed: "relu_cam" (AdvCAM's code) or "classifier" (the logits)


SCORES = ("relu_cam", "classifier")


def climb_objective(model: CamModel, x: torch.Tensor, target: torch.Tensor, init: torch.Tensor | None,
                    coeff: float, score_th: float, logits: str = "relu_cam") -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row objective J and the ReLU'd CAM of the target class: x (N, 3, H, W), target (N,) → (N,), (N, h, w)."""
    features = model.features(x)
    rows = torch.arange(len(x))
    maps = F.relu(model.class_maps(features))
    cam = maps[rows, target]
    scores = maps.mean(dim=(2, 3)) if logits == "relu_cam" else model.logits_from_features(features)
    own = scores[rows, target]
    objective = own - (scores.sum(dim=1) - own)
    if init is not None and coeff:
        peak = cam.detach().amax(dim=(1, 2), keepdim=True)
        region = (cam.detach() / (peak + 1e-12) > score_th).to(cam.dtype)
        objective = objective - coeff * ((cam - init).abs() * region).sum(dim=(1, 2))
    return objective, cam


def adversarial_step(x: torch.Tensor, grad: torch.Tensor, stepsize: float) -> torch.Tensor:
    """x + ξ · g / max|g| per image, clipped to each image's current [min, max]."""
    scale = grad.abs().flatten(1).amax(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
    low = x.flatten(1).amin(dim=1).view(-1, 1, 1, 1)
    high = x.flatten(1).amax(dim=1).view(-1, 1, 1, 1)
    return torch.minimum(torch.maximum(x + stepsize * grad / scale, low), high)


@register_cam_method("advcam")
class AdvCam(CamMethod):
    needs_grad = True

    def __init__(self, cfg: CamConfig, options: AdvcamOptions | None = None) -> None:
        super().__init__(cfg)
        self.options = options or from_dict(AdvcamOptions, dict(getattr(cfg, "options", {}) or {}), "cam.options")
        if self.options.adv_iter < 1:
            raise ConfigError(f"advcam: adv_iter must be >= 1, got {self.options.adv_iter}")
        if self.options.logits not in SCORES:
            raise ConfigError(f"advcam: logits must be one of {', '.join(SCORES)}, got {self.options.logits!r}")

    def steps_for(self, images: torch.Tensor) -> tuple[int, float]:
        base, steps = self.options.base_size, self.options.adv_iter
        if base is not None and max(images.shape[-2:]) < base and steps > 1:
            return steps // 2, 2.0
        return steps, 1.0

    def __call__(self, model: CamModel, images: torch.Tensor, classes: Sequence[int] | None = None) -> torch.Tensor:
        opts = self.options
        picked = list(range(model.class_weights.shape[0])) if classes is None else list(classes)
        n, k = len(images), len(picked)
        if k == 0:
            features = model.features(images[:1])
            return images.new_zeros(n, 0, *features.shape[-2:])
        x = images.detach().repeat_interleave(k, dim=0)  # row i·k + j: image i climbing for class picked[j]
        target = torch.tensor(picked, dtype=torch.long).repeat(n)
        steps, weight = self.steps_for(images)
        total: torch.Tensor | None = None
        init: torch.Tensor | None = None
        for _ in range(steps):
            x = x.detach().requires_grad_(True)
            objective, cam = climb_objective(model, x, target, init, opts.ad_coeff, opts.score_th, opts.logits)
            if init is None:
                init = cam.detach()
            total = cam.detach() if total is None else total + cam.detach()
            (grad,) = torch.autograd.grad(objective.sum(), x)
            x = adversarial_step(x.detach(), grad, opts.ad_stepsize)
        assert total is not None
        return (weight * total).view(n, k, *total.shape[-2:])
