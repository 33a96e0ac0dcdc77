"""Negative weight clamping (NWC, Bae et al. ECCV'20) for every CAM method, not only CAM itself.

Methods that derive their channel weights from gradients (Grad-CAM and its family) never read the
class weights, so clamping them inside CAM alone would not reach them. Wrapping the model
(:class:`NegativeWeightClamped`) changes the classifier itself, and ``CamExtractor`` does so whenever
``CamConfig(clamp_negative_weights=True)``: ``class_weights`` are
``max(w, 0)`` and the logits are computed with them, so CAM gives ``Σ_k 1(w_ck > 0) w_ck F_k`` (the talk's
formula) and a gradient method differentiates the clamped head. On a GAP → linear head, Grad-CAM of the
wrapped model equals NWC-CAM / (h·w), exactly as without NWC.
"""

from __future__ import annotations

from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from scarce.errors import ConfigError
from scarce.models.classifier import CamClassifier, CamModel, TimmHeadClassifier


class NegativeWeightClamped(CamModel):
    """A :class:`CamModel` whose class weights are clamped at zero; layer names stay those of the wrapped model."""

    def __init__(self, model: CamModel) -> None:
        super().__init__()
        if not isinstance(model, (CamClassifier, TimmHeadClassifier)):
            raise ConfigError(f"NWC needs a linear-head model (CamClassifier or TimmHeadClassifier), got {type(model).__name__}")
        self.inner = model
        self.num_classes = model.num_classes

    def named_modules(self, memo: set | None = None, prefix: str = "", remove_duplicate: bool = True
                      ) -> Iterator[tuple[str, nn.Module]]:
        # Grad-CAM finds its target layer by name: expose the wrapped model's names unchanged.
        return self.inner.named_modules(memo, prefix, remove_duplicate)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.inner.features(images)

    @property
    def class_weights(self) -> torch.Tensor:
        return self.inner.class_weights.clamp_min(0.0)

    def logits_from_features(self, features: torch.Tensor) -> torch.Tensor:
        if isinstance(self.inner, CamClassifier):
            return F.linear(self.inner.pool(features), self.class_weights)
        head = self.inner.model.get_classifier()
        pooled = self.inner.model.forward_head(features, pre_logits=True)
        return F.linear(pooled, self.class_weights, head.bias)

    @property
    def mean_std(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        return self.inner.mean_std


def with_nwc(model: CamModel, enabled: bool) -> CamModel:
    """``model`` itself, or wrapped so that every CAM method sees clamped class weights."""
    if not enabled or isinstance(model, NegativeWeightClamped):
        return model
    return NegativeWeightClamped(model)
