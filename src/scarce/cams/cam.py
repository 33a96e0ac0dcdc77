"""CAM (Zhou et al., CVPR'16): M_c = Σ_d W[c, d] · F_d, all classes at once (``class_maps``)."""

from __future__ import annotations

from typing import Sequence

import torch

from scarce.cams.base import CamMethod, register_cam_method
from scarce.models.classifier import CamModel, class_maps


@register_cam_method("cam")
class ClassActivationMap(CamMethod):
    def __call__(self, model: CamModel, images: torch.Tensor, classes: Sequence[int] | None = None) -> torch.Tensor:
        weights = model.class_weights
        if self.cfg.clamp_negative_weights:
            weights = weights.clamp_min(0.0)
        if classes is not None:
            weights = weights[list(classes)]
        return class_maps(weights, model.features(images))
