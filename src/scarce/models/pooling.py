"""Spatial pooling of feature maps into one vector per image, for classifier training.

``gap`` is global average pooling. ``tap`` is Thresholded Average Pooling (Bae et al., "Rethinking CAM for
WSOL", ECCV'20; the LID'20 talk): per channel, average only the positions whose activation exceeds
``tau`` times the channel's spatial maximum, so that channels with a small active area are not drowned
by zeros: ``p_k = Σ 1[f_k > τ·max f_k] f_k / Σ 1[f_k > τ·max f_k]`` (a channel that is zero everywhere
pools to 0).
"""

from __future__ import annotations

import torch
from torch import nn


class GlobalAvgPool(nn.Module):
    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features.mean(dim=(2, 3))


class ThresholdedAvgPool(nn.Module):
    def __init__(self, tau: float = 0.05) -> None:
        super().__init__()
        if not 0.0 <= tau < 1.0:
            raise ValueError(f"TAP threshold must be in [0, 1), got {tau}")
        self.tau = tau

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        peak = features.amax(dim=(2, 3), keepdim=True)
        keep = (features > self.tau * peak).to(features.dtype)
        total = (features * keep).sum(dim=(2, 3))
        count = keep.sum(dim=(2, 3))
        return total / count.clamp_min(1.0)

    def extra_repr(self) -> str:
        return f"tau={self.tau}"


def build_pooling(name: str, tap_tau: float = 0.05) -> nn.Module:
    if name == "gap":
        return GlobalAvgPool()
    if name == "tap":
        return ThresholdedAvgPool(tap_tau)
    raise ValueError(f"unknown pooling {name!r}; choose 'gap' or 'tap'")
