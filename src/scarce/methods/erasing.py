"""Class-specific adversarial erasing (OC-CSE: Kweon et al., "Unlocking the potential of ordinary classifier", ICCV'21).

Training objective ``erasing``. Two classifiers: the one being trained, E (the "erasing" network; OC-CSE's
``er_init`` starts it from ImageNet weights, the method config's ``start_from`` decides), and a **frozen
ordinary classifier** C (the converged CAM classifier of the same seed, OC-CSE's ``cl_init: cam``). Per
image, one GT class r is drawn at random; E's CAM of r, upsampled to the image and ReLU'd, is divided by its
maximum and erases the image:

    mask = relu(up(CAM_E^r)) / (max + 1e-5),   x_erased = x ⊙ (1 − mask),
    L = BCE(E(x), y) + w · BCE(C(x_erased), y ∖ {r}),   w = cc_init + cc_slope · epoch.

The gradient of the second term reaches E through the mask only (C is frozen and stays in eval mode), so E
learns to cover *all* of class r: whatever it leaves visible lets C still recognise r. OC-CSE divides by the
maximum over the whole batch (``mask_norm: batch``, the default here, as in its code); ``mask_norm: image``
uses each image's own maximum. ``mask_threshold`` switches to hard erasing (classic adversarial erasing):
pixels whose normalised map exceeds the threshold are set to 0, the others are kept as they are.

The ramp w = 0.3 + 0.05 · epoch is defined on OC-CSE's 15-epoch schedule; here w follows the same line over
the fraction of training done, ``w = cc_init + cc_slope · ramp_epochs · progress`` (0.3 → 1.05, where
OC-CSE's per-epoch steps end at 1.0 in its last epoch), so that a shorter schedule sees the same range of
weights. Inference is the ordinary CAM of E.

Optimiser (OC-CSE's ``train_setup``): the pretrained weights at the base rate (lr 0.01) with weight decay,
pretrained biases at 2× without decay, the new classifier's weights at 10× (``head_lr_mult``) with decay and
its biases at 20× without; weight decay 5e-4 (``wt_dec``, set in configs/methods/erasing.yaml). On the
benchmark's EfficientNet-Lite0 (bias-free convolutions, frozen BatchNorm, bias-free head) the bias groups are
empty; backbones with biases (e.g. squeeze-excitation blocks) fill them. Departure: OC-CSE's PolyOptimizer
inherits PSA's slip of passing weight decay as SGD's momentum (so momentum 5e-4, i.e. none); scarce keeps
the base recipe's momentum 0.9, as for the CAM classifier it is compared with.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
import torch.nn.functional as F

from scarce.errors import ConfigError
from scarce.models.classifier import CamClassifier, CamModel
from scarce.training.losses import Objective, ParamGroup, register_objective

MASK_NORMS = ("batch", "image")


def erasing_mask(cams: torch.Tensor, size: tuple[int, int], norm: str = "batch",
                 threshold: float | None = None) -> torch.Tensor:
    """(B, h, w) raw CAMs of the erased class → (B, 1, H, W) mask in [0, 1] (soft, or {0, 1} with a threshold)."""
    if norm not in MASK_NORMS:
        raise ConfigError(f"erasing: mask_norm must be one of {MASK_NORMS}, got {norm!r}")
    mask = F.relu(F.interpolate(cams[:, None], size=size, mode="bilinear", align_corners=False))
    peak = mask.amax() if norm == "batch" else mask.amax(dim=(1, 2, 3), keepdim=True)
    mask = mask / (peak + 1e-5)
    if threshold is not None:
        mask = (mask > threshold).to(mask.dtype)
    return mask


def erase(images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """x ⊙ (1 − mask); on normalised images 0 is the dataset mean colour."""
    return images * (1.0 - mask)


@register_objective("erasing")
class ErasingObjective(Objective):
    def __init__(self, num_classes: int, feature_dim: int, classifier: str | None = None, cc_init: float = 0.3,
                 cc_slope: float = 0.05, ramp_epochs: int = 15, mask_norm: str = "batch",
                 mask_threshold: float | None = None) -> None:
        super().__init__()
        if mask_norm not in MASK_NORMS:
            raise ConfigError(f"erasing: mask_norm must be one of {MASK_NORMS}, got {mask_norm!r}")
        self.classifier_path = classifier
        self.cc_init, self.cc_slope, self.ramp_epochs = float(cc_init), float(cc_slope), int(ramp_epochs)
        self.mask_norm, self.mask_threshold = mask_norm, mask_threshold
        # Kept out of the module tree: frozen, not trained, not saved with the objective's state.
        self._ordinary: list[CamModel] = []

    def set_ordinary(self, classifier: CamModel) -> None:
        """Use ``classifier`` (frozen, eval mode) as the ordinary classifier C."""
        classifier.eval()
        for p in classifier.parameters():
            p.requires_grad_(False)
        self._ordinary[:] = [classifier]

    def ordinary(self, model: CamModel) -> CamModel:
        if not self._ordinary:
            if self.classifier_path is None:
                raise ConfigError("objective 'erasing' needs objective_options.classifier: the model.pt of a trained "
                                  "CAM classifier (OC-CSE's frozen ordinary classifier)")
            path = Path(self.classifier_path)
            if not path.is_file():
                raise ConfigError(f"erasing: ordinary classifier {path} not found (train the CAM run first)")
            clone = copy.deepcopy(model)
            clone.load_state_dict(torch.load(path, map_location="cpu", weights_only=True)["model"])
            self.set_ordinary(clone)
        return self._ordinary[0]

    def parameter_groups(self, model: CamClassifier, head_lr_mult: float) -> list[ParamGroup]:
        """OC-CSE's four groups: weights ×1 and ×head_lr_mult with decay, their biases ×2 of that without decay."""
        groups = []
        for params, mult in zip(model.parameter_groups(), (1.0, head_lr_mult)):
            groups.append(ParamGroup([p for p in params if p.ndim > 1], mult))
            groups.append(ParamGroup([p for p in params if p.ndim <= 1], 2.0 * mult, decay=False))
        return groups

    def weight(self, progress: float) -> float:
        return self.cc_init + self.cc_slope * self.ramp_epochs * progress

    def forward(self, model: CamModel, images: torch.Tensor, labels: torch.Tensor,
                progress: float) -> tuple[torch.Tensor, dict[str, float]]:
        ordinary = self.ordinary(model)
        features = model.features(images)
        cls = F.multilabel_soft_margin_loss(model.logits_from_features(features), labels)
        has_label = labels.sum(dim=1) > 0
        # one random GT class per image (the trainer seeds torch's RNG per step)
        target = torch.multinomial(torch.where(has_label[:, None], labels, torch.ones_like(labels)), 1)[:, 0]
        rows = torch.arange(len(images))
        cams = model.class_maps(features)[rows, target]
        mask = erasing_mask(cams, images.shape[-2:], self.mask_norm, self.mask_threshold)
        mask = mask * has_label[:, None, None, None].to(mask.dtype)
        remain = labels.clone()
        remain[rows, target] = 0.0
        erased_logits = ordinary(erase(images, mask))
        sel = F.multilabel_soft_margin_loss(erased_logits, remain)
        w = self.weight(progress)
        return cls + w * sel, {"cls": float(cls.detach()), "erased": float(sel.detach()), "w": w}

    def train(self, mode: bool = True) -> "ErasingObjective":
        super().train(mode)
        for classifier in self._ordinary:
            classifier.eval()  # C always stays in eval mode (its BN statistics never move)
        return self
