"""Grad-CAM (Selvaraju et al., ICCV'17) on any layer, all requested classes in one backward.

Channel weights are the spatial mean of d logit_c / d A; the map is Σ_k w_k A_k (ReLU is applied by the
core). The gradients of every class come from one batched backward (``is_grads_batched``), not one
backward per class. On a GAP → linear head at the last feature map, Grad-CAM equals CAM / (h·w).
"""

from __future__ import annotations

from typing import Sequence

import torch

from scarce.cams.base import CamMethod, register_cam_method
from scarce.errors import ConfigError
from scarce.models.classifier import CamModel


def _find_module(model: torch.nn.Module, name: str) -> torch.nn.Module:
    modules = dict(model.named_modules())
    if name not in modules:
        hint = [n for n in modules if n][-5:]
        raise ConfigError(f"no layer named {name!r} in {type(model).__name__}; last layers: {', '.join(hint)}")
    return modules[name]


@register_cam_method("gradcam")
class GradCam(CamMethod):
    needs_grad = True

    def __call__(self, model: CamModel, images: torch.Tensor, classes: Sequence[int] | None = None) -> torch.Tensor:
        captured: list[torch.Tensor] = []
        if self.cfg.layer is None:
            features = model.features(images)
            activations = features
            logits = model.logits_from_features(features)
        else:
            handle = _find_module(model, self.cfg.layer).register_forward_hook(lambda m, i, o: captured.append(o))
            try:
                logits = model(images)
            finally:
                handle.remove()
            activations = captured[-1]
        picked = list(range(logits.shape[1])) if classes is None else list(classes)
        # One "grad output" per class: row k selects logit picked[k] of every image.
        selectors = torch.zeros(len(picked), *logits.shape, dtype=logits.dtype)
        selectors[torch.arange(len(picked)), :, torch.tensor(picked)] = 1.0
        (grads,) = torch.autograd.grad(logits, activations, grad_outputs=selectors, is_grads_batched=True)
        weights = grads.mean(dim=(-2, -1))  # (K, B, D)
        return torch.einsum("kbd,bdhw->bkhw", weights, activations)
