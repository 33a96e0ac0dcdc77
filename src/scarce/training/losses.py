"""Training objectives for image-level-label classifiers.

An objective owns the loss (and any extra modules it trains, such as ReCAM's second classifier), so that
training-time CAM methods plug into one trainer. The baseline is the multi-label soft margin loss used by
IRN and its forks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from scarce.models.classifier import CamClassifier


class Objective(nn.Module):
    """Loss of one batch. Extra trainable modules are registered as sub-modules (trained at the head lr)."""

    name = "base"

    def forward(self, model: CamClassifier, images: torch.Tensor, labels: torch.Tensor,
                progress: float) -> tuple[torch.Tensor, dict[str, float]]:
        """Return (loss, named parts for the log). ``progress`` ∈ [0, 1] is the fraction of training done."""
        raise NotImplementedError


class MultiLabelObjective(Objective):
    """Multi-label soft margin loss on the pooled logits (IRN's ``train_cam``)."""

    name = "cam"

    def forward(self, model: CamClassifier, images: torch.Tensor, labels: torch.Tensor,
                progress: float) -> tuple[torch.Tensor, dict[str, float]]:
        loss = F.multilabel_soft_margin_loss(model(images), labels)
        return loss, {"cls": float(loss.detach())}
