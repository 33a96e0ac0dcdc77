"""ReCAM (Chen et al., "Class Re-Activation Maps for Weakly-Supervised Semantic Segmentation", CVPR'22).

Training (objective ``recam``): besides the multi-label soft margin loss (BCE) of the CAM classifier, every
GT-positive class k of an image gets a *class feature*

    f_k = mean_{x,y} CAM_k(x, y) · F(x, y),   CAM_k = relu(W_k · F) / (max relu(W_k · F) + 1e-5),

and a second, bias-free linear classifier (the re-activation head, C × D) classifies f_k with **softmax
cross-entropy** against label k. Loss = BCE + λ · SCE (λ = ``loss_weight``, 1.0 on VOC, 0.1 on COCO).
The class features of all classes come from one ``einsum('bchw,bdhw->bcd')``: a B×C×D tensor, never
ReCAM's B×C×D×H×W product. As in ReCAM's ``Class_Predictor``, the SCE term is averaged over each image's
positive classes, summed over images and divided by the batch size (an image without a positive class
adds 0 and still counts in the batch).

Learning rates (``train_recam.py``): the backbone **and the original classifier W_cls** train at 0.1 × the
ReCAM rate, only the new head at the ReCAM rate (``recam_learning_rate`` 5e-4), weight decay 1e-4 for all,
poly decay over 4 epochs. With the trainer's ``lr`` = 5e-5 and ``head_lr_mult`` = 10
(``configs/methods/recam.yaml``), :meth:`ReCamObjective.parameter_groups` gives exactly these rates. (Before
this was fixed, W_cls sat in the 10× group with the head.) One departure: the head starts at zero, where
ReCAM's ``nn.Conv2d`` starts at PyTorch's default init (see ``ReCamObjective.__init__``).

Inference (CAM method ``recam``): the CAM with the element-wise product of the two classifiers' weights,
``M_c = Σ_d (W_recam ⊙ W_cls)[c, d] · F_d``, then the shared multi-scale/flip/normalisation core.

In the paper, ReCAM trains 4 epochs on top of the converged BCE classifier; the comparison benchmark does
the same (``start_from: cam`` in ``configs/methods/recam.yaml``).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from scarce.cams.base import CamConfig, CamMethod, normalize_cams, register_cam_method
from scarce.errors import ConfigError
from scarce.models.classifier import CamClassifier, CamModel, class_maps
from scarce.training.losses import Objective, ParamGroup, register_objective


def normalized_cams(model: CamModel, features: torch.Tensor) -> torch.Tensor:
    """relu(W · F) divided by each map's spatial max (+1e-5): (B, D, h, w) → (B, C, h, w), differentiable."""
    return normalize_cams(F.relu(model.class_maps(features)), "max")


def class_features(cams: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """CAM-pooled class features ``f[b, c] = mean_{x,y} cams[b, c] · features[b]``: (B, C, h, w), (B, D, h, w) → (B, C, D)."""
    h, w = features.shape[-2:]
    return torch.einsum("bchw,bdhw->bcd", cams, features) / float(h * w)


def positive_softmax_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Softmax CE of the class features of each image's positive classes: mean per image, summed, divided by B.

    ``logits``: (B, C, C), row ``[b, k]`` = the head's scores of f_k of image b; ``labels``: (B, C) multi-hot.
    An image without a positive class adds nothing but counts in B (ReCAM's ``loss / batch_size``).
    """
    batch, class_index = labels.nonzero(as_tuple=True)
    if batch.numel() == 0:
        return logits.sum() * 0.0
    per_pair = F.cross_entropy(logits[batch, class_index], class_index, reduction="none")
    weights = 1.0 / labels.sum(dim=1)[batch]
    return (per_pair * weights).sum() / len(labels)


@register_objective("recam")
class ReCamObjective(Objective):
    """BCE + λ · softmax CE of the re-activation head on CAM-pooled class features."""

    def __init__(self, num_classes: int, feature_dim: int, loss_weight: float = 1.0) -> None:
        super().__init__()
        if loss_weight < 0:
            raise ConfigError(f"recam: loss_weight must be >= 0, got {loss_weight}")
        self.loss_weight = float(loss_weight)
        self.head = nn.Linear(feature_dim, num_classes, bias=False)  # ReCAM's Class_Predictor (1×1 conv, no bias)
        # Zero start, like the spine's CAM head: the SCE starts at log C whatever the feature scale.
        nn.init.zeros_(self.head.weight)

    def parameter_groups(self, model: CamClassifier, head_lr_mult: float) -> list[ParamGroup]:
        """ReCAM's groups: backbone and W_cls at the base rate (0.1 × ReCAM's), the re-activation head at × head_lr_mult."""
        backbone, classifier = model.parameter_groups()
        return [ParamGroup(backbone + classifier), ParamGroup(list(self.head.parameters()), head_lr_mult)]

    def forward(self, model: CamModel, images: torch.Tensor, labels: torch.Tensor,
                progress: float) -> tuple[torch.Tensor, dict[str, float]]:
        features = model.features(images)
        bce = F.multilabel_soft_margin_loss(model.logits_from_features(features), labels)
        pooled = class_features(normalized_cams(model, features), features)  # (B, C, D)
        sce = positive_softmax_ce(self.head(pooled), labels)
        loss = bce + self.loss_weight * sce
        return loss, {"cls": float(bce.detach()), "recam": float(sce.detach())}


@register_cam_method("recam")
class ReCam(CamMethod):
    """M_c = Σ_d (W_recam ⊙ W_cls)[c, d] F_d. Needs the trained head: ``bind(objective)`` or ``head_weight=``."""

    def __init__(self, cfg: CamConfig, head_weight: torch.Tensor | None = None) -> None:
        super().__init__(cfg)
        unknown = set(getattr(cfg, "options", {}) or {})
        if unknown:
            raise ConfigError(f"CAM method recam takes no options, got {sorted(unknown)}")
        self.head_weight = head_weight

    def bind(self, objective: nn.Module) -> None:
        head = getattr(objective, "head", None)
        if not isinstance(objective, ReCamObjective) or head is None:
            raise ConfigError("CAM method 'recam' needs a classifier trained with objective 'recam'")
        self.head_weight = head.weight.detach()

    def combined_weights(self, model: CamModel) -> torch.Tensor:
        if self.head_weight is None:
            raise ConfigError("CAM method 'recam' has no re-activation head: train with objective 'recam' and bind it")
        weights = model.class_weights
        if self.head_weight.shape != weights.shape:
            raise ConfigError(f"recam head is {tuple(self.head_weight.shape)}, classifier is {tuple(weights.shape)}")
        return self.head_weight.to(weights) * weights

    def __call__(self, model: CamModel, images: torch.Tensor, classes: Sequence[int] | None = None) -> torch.Tensor:
        weights = self.combined_weights(model)
        if classes is not None:
            weights = weights[list(classes)]
        return class_maps(weights, model.features(images))
