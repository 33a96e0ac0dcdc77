"""Training objectives for image-level-label classifiers.

An objective owns the loss (and any extra modules it trains, such as ReCAM's second classifier), so that
training-time CAM methods plug into one trainer. The baseline is the multi-label soft margin loss used by
IRN and its forks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from scarce.models.classifier import CamClassifier


@dataclass(frozen=True)
class ParamGroup:
    """Parameters trained at ``lr_mult`` × the base learning rate, with weight decay unless ``decay`` is False."""

    params: list[nn.Parameter]
    lr_mult: float = 1.0
    decay: bool = True


class Objective(nn.Module):
    """Loss of one batch. Extra trainable modules are registered as sub-modules (trained at the head lr)."""

    name = "base"

    def parameter_groups(self, model: CamClassifier, head_lr_mult: float) -> list[ParamGroup]:
        """The optimiser's groups.

        IRN's ``train_cam``: the backbone at the base rate, the classifier (and any module the objective adds)
        at ``head_lr_mult`` × it. An objective whose paper groups its parameters otherwise overrides this.
        """
        backbone, head = model.parameter_groups()
        return [ParamGroup(backbone), ParamGroup(head + list(self.parameters()), head_lr_mult)]

    def batch_weight(self, targets: torch.Tensor) -> float:
        """What the loss's mean divides by: the images of the batch. Several processes weight each one's
        mean by it (:mod:`scarce.distributed`), so that together they compute the whole batch's mean; an
        objective averaging over something else (labelled pixels) says so here."""
        return float(len(targets))


OBJECTIVES: dict[str, Callable[..., Objective]] = {}


def register_objective(name: str) -> Callable[[type[Objective]], type[Objective]]:
    def add(cls: type[Objective]) -> type[Objective]:
        OBJECTIVES[name] = cls
        cls.name = name
        return cls

    return add


def build_objective(name: str, num_classes: int, feature_dim: int, options: dict[str, Any] | None = None) -> Objective:
    """Instantiate a registered objective; each takes ``num_classes``, ``feature_dim`` and its own options."""
    from scarce.errors import ConfigError

    if name not in OBJECTIVES:
        raise ConfigError(f"unknown training objective {name!r}; available: {', '.join(sorted(OBJECTIVES))}")
    try:
        return OBJECTIVES[name](num_classes=num_classes, feature_dim=feature_dim, **(options or {}))
    except TypeError as exc:
        raise ConfigError(f"objective {name!r}: bad options {options} ({exc})") from None


@register_objective("cam")
class MultiLabelObjective(Objective):
    """Multi-label soft margin loss on the pooled logits (IRN's ``train_cam``)."""

    def __init__(self, num_classes: int = 0, feature_dim: int = 0) -> None:
        super().__init__()

    def forward(self, model: CamClassifier, images: torch.Tensor, labels: torch.Tensor,
                progress: float) -> tuple[torch.Tensor, dict[str, float]]:
        loss = F.multilabel_soft_margin_loss(model(images), labels)
        return loss, {"cls": float(loss.detach())}
