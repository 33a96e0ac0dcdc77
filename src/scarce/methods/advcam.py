"""AdvCAM (Lee et al., "Anti-Adversarially Manipulated Attributions for WSSS", CVPR'21; TPAMI'22).

CAM method ``advcam``: for every (image, class c) pair, the image **and its flip** climb together the gradient of

    J(x) = Σ_views [y_c(x) − Σ_{k≠c} y_k(x)] − λ · Σ_{(i,j)} M_{ij} · |R(x)_{ij} − R(x⁰)_{ij}|,
    x ← clip(x + ξ · ∇J / max|∇J|),   max and clip range taken over the pair (the current pair's [min, max]),

where R is AdvCAM's Grad-CAM map of class c summed over the pair (``R = R_img + flip(R_flip)``) and M marks
the pixels whose max-normalised R exceeds ``score_th`` (recomputed at every step, as AdvCAM's code). The map
returned is the **sum** of R over the ``adv_iter`` steps (x⁰ … x^{T−1}). Defaults are AdvCAM's: 27 steps,
λ = 7, ξ = 0.08, score_th = 0.5. This follows ``obtain_CAM_masking.py`` line by line:

- **The map R.** AdvCAM's vendored ``gradCAM.py`` on the CAM layer: the gradient of Σ_views Σ_{x,y} relu(CAM_c)
  (``gsp2d``) with respect to the features F is W_{c,d} · 1[CAM_c > 0]; its channel weights are that
  gradient summed over positions and divided by the number of positive entries of the *whole* gradient tensor
  (``gap2d_pos``: D⁺ · Σ_v P_v, D⁺ the positive entries of W_c, P_v the positive pixels of view v); and
  R_v = relu(Σ_d weight_{v,d} F_d). In closed form (:func:`gradcam_scale`)

      R_v = relu(CAM_c,v) · P_v / (D⁺ · Σ_v P_v),

  the scale being a constant for the gradient (hooked gradients carry no graph). For a ResNet-50 pair with
  about half of W_c's 2048 weights positive (D⁺ ≈ 1000, an assumption, not a measurement) R ≈ relu(CAM)/2000
  (P_0 ≈ P_1): λ = 7 acts on a map three orders of magnitude smaller than the
  plain ReLU'd CAM scarce penalised before this was fixed (and summed). λ keeps its official meaning here;
  the balance of penalty and scores still depends on the backbone: the penalty sums over the h·w grid
  while the scores average over it, so their ratio goes as λ · h·w / (2 D⁺): ≈ 7 · 32·32 / 2000 ≈ 3.6 for
  ResNet-50 on 512-px VOC crops, ≈ 7 · 8·8 / 1280 ≈ 0.35 for EfficientNet-Lite0 (1280 channels, again half
  assumed positive) on the 128-px scenes, i.e. a regulariser about ten times weaker against the scores
  there (not re-tuned: λ is AdvCAM's).
- **The scores y** (``logits: relu_cam``, the default): the mean over the grid of relu(CAM_k), AdvCAM's
  ``gap2d(relu(logits))``, not the classifier's logits (``logits: classifier``, a control; the paper's
  equation reads as either). A logit (mean of the raw map) also rises when negative context turns less
  negative and falls without bound as other classes' maps turn negative; relu'd scores only grow with
  positive evidence for c.
- **Scales.** All scales weigh the same (AdvCAM's ``mul_for_scale`` is set at its first, 0.5 scale and
  never reset, so every scale gets the same factor). The smallest scale gets fewer steps: ``adv_iter // 2``
  when adv_iter > 10, 5 when 6 ≤ adv_iter ≤ 10, adv_iter below 6 (:func:`small_scale_steps`); "smallest"
  is every view whose longer side is below ``base_size`` (the side of the scale-1 images).

Each pair is climbed separately: the cost is ``adv_iter`` forward+backward passes per (image, class) and
scale (AdvCAM: 316 CAM units). The core asks for the union of a batch's classes, so ``cam.batch_size: 1``
avoids climbing for classes an image does not have. Gradients (with respect to the input only) are
enabled by the core (``needs_grad``); the core's flip-sum of the per-view maps returned here gives R.
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
    base_size: int | None = None  # views with a longer side below it take small_scale_steps(adv_iter)
    logits: str = "relu_cam"  # the scores climbed: "relu_cam" (AdvCAM's code) or "classifier" (the logits)


SCORES = ("relu_cam", "classifier")


def small_scale_steps(adv_iter: int) -> int:
    """AdvCAM's number of steps at its smallest (0.5) scale."""
    if adv_iter > 10:
        return adv_iter // 2
    return 5 if adv_iter >= 6 else adv_iter


def gradcam_scale(cam: torch.Tensor, class_weights: torch.Tensor) -> torch.Tensor:
    """AdvCAM's Grad-CAM factor P_v / (D⁺ · Σ_v P_v): cam (V, G, h, w) ReLU'd, class_weights (G, D) → (V, G).

    V views (image, flip) of G climbing pairs; P_v = positive pixels of view v, D⁺ = positive weights of W_c.
    """
    pixels = (cam > 0).sum(dim=(2, 3)).to(cam.dtype)
    channels = (class_weights > 0).sum(dim=1).to(cam.dtype)
    return pixels / (channels * pixels.sum(dim=0) + 1e-12)


def flip_sum(maps: torch.Tensor) -> torch.Tensor:
    """(V, G, h, w) per-view maps → (G, h, w): the image's map plus the flipped view's map flipped back."""
    return maps[0] + maps[1].flip(-1) if len(maps) == 2 else maps[0]


def climb_objective(model: CamModel, x: torch.Tensor, target: torch.Tensor, init: torch.Tensor | None,
                    coeff: float, score_th: float, logits: str = "relu_cam") -> tuple[torch.Tensor, torch.Tensor]:
    """J per pair and the per-view maps R_v: x (V, G, 3, H, W), target (G,), init (G, h, w) → (G,), (V, G, h, w)."""
    views, groups = x.shape[:2]
    features = model.features(x.flatten(0, 1))
    maps = F.relu(model.class_maps(features))
    rows, classes = torch.arange(views * groups), target.repeat(views)
    cam = maps[rows, classes].view(views, groups, *maps.shape[-2:])
    scores = maps.mean(dim=(2, 3)) if logits == "relu_cam" else model.logits_from_features(features)
    own = scores[rows, classes]
    objective = (2 * own - scores.sum(dim=1)).view(views, groups).sum(dim=0)  # y_c − Σ_{k≠c} y_k, summed over views
    regions = cam * gradcam_scale(cam.detach(), model.class_weights[target].detach())[..., None, None]
    if init is not None and coeff:
        region = flip_sum(regions)
        peak = region.detach().amax(dim=(1, 2), keepdim=True)
        mask = (region.detach() / peak.clamp_min(1e-12) > score_th).to(region.dtype)
        objective = objective - coeff * ((region - init).abs() * mask).sum(dim=(1, 2))
    return objective, regions


def adversarial_step(x: torch.Tensor, grad: torch.Tensor, stepsize: float) -> torch.Tensor:
    """x + ξ · g / (max|g| + 1e-12) per pair, clipped to the pair's current [min, max]: x, grad (V, G, 3, H, W)."""
    dims = (0, 2, 3, 4)
    scale = grad.abs().amax(dim=dims, keepdim=True) + 1e-12
    low, high = x.amin(dim=dims, keepdim=True), x.amax(dim=dims, keepdim=True)
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

    def steps_for(self, images: torch.Tensor) -> int:
        base, steps = self.options.base_size, self.options.adv_iter
        return small_scale_steps(steps) if base is not None and max(images.shape[-2:]) < base else steps

    def __call__(self, model: CamModel, images: torch.Tensor, classes: Sequence[int] | None = None) -> torch.Tensor:
        opts = self.options
        picked = list(range(model.class_weights.shape[0])) if classes is None else list(classes)
        views = 2 if self.cfg.flip else 1
        n, k = len(images) // views, len(picked)
        if k == 0:
            features = model.features(images[:1])
            return images.new_zeros(len(images), 0, *features.shape[-2:])
        # (V·n, 3, H, W) → (V, n·k, 3, H, W): pair g = i·k + j is image i (and its flip) climbing for picked[j]
        x = images.detach().view(views, n, *images.shape[1:]).repeat_interleave(k, dim=1)
        target = torch.tensor(picked, dtype=torch.long).repeat(n)
        total: torch.Tensor | None = None
        init: torch.Tensor | None = None
        for _ in range(self.steps_for(images)):
            x = x.detach().requires_grad_(True)
            objective, regions = climb_objective(model, x, target, init, opts.ad_coeff, opts.score_th, opts.logits)
            if init is None:
                init = flip_sum(regions).detach()
            total = regions.detach() if total is None else total + regions.detach()
            (grad,) = torch.autograd.grad(objective.sum(), x)
            x = adversarial_step(x.detach(), grad, opts.ad_stepsize)
        assert total is not None
        return total.reshape(views * n, k, *total.shape[-2:])
