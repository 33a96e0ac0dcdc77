"""Training a DeepLabV3+ segmenter on label maps with 255 ignored, resumable with identical results.

The loop is the classifier's (:func:`scarce.training.train_classifier`): sample order, augmentation and the
torch RNG of every step are functions of (seed, epoch, step); a checkpoint is written atomically after every
epoch; a resumed run reaches the weights of an uninterrupted one; ``train_log.csv`` holds the loss per
epoch; a non-finite loss raises :class:`~scarce.errors.TrainingError` with the last checkpoint kept.

Recipe (defaults of :class:`SegmentTrainConfig`), from DeepLab practice:

- SGD, momentum 0.9, weight decay 1e-4 (torchvision's segmentation reference ``references/segmentation``;
  VainF/DeepLabV3Plus-Pytorch defaults to 4e-5), poly learning rate with power 0.9 (DeepLabV3/V3+);
- the encoder at 0.1× the decoder's rate (VainF/DeepLabV3Plus-Pytorch ``main.py``: backbone ``0.1 * lr``,
  classifier ``lr``): here ``lr`` 0.01 for the encoder and ``head_lr_mult`` 10. VainF's rates (encoder
  0.001) run 30k steps on VOC; the scenes' schedule is 1,350 (30 epochs of 45), and at 0.001 the fully
  supervised model underfits its own training masks (61 train mIoU, single scale; val 42.8). At 0.01 it
  fits them to 72 and scores val 51.1 (docs/segmentation.md; chosen on val, never on test);
- BatchNorm trained (DeepLabV3+ fine-tunes BN), so an epoch's last incomplete batch is dropped as in
  torchvision's reference (a batch of one cannot normalise ASPP's 1×1 image-pooling map);
- random scale 0.5–2.0, horizontal flip, a random crop padded with the mean (image) and 255 (label map),
  as DeepLabV3's VOC training; the crop is 128 px here instead of 513 because the default scenes are
  128 px (it must be a multiple of the output stride, which smp requires of its input).

AdamW is not offered: no DeepLab recipe uses it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from scarce.data.base import WeakDataset
from scarce.errors import ConfigError
from scarce.io import IGNORE_INDEX
from scarce.segmentation.data import MaskedImages, MaskSource, check_masks, describe_masks, mask_dataset
from scarce.segmentation.model import Segmenter, SegmenterConfig, build_segmenter
from scarce.training.losses import Objective
from scarce.training.trainer import TrainConfig, TrainResult, load_trained, train_classifier
from scarce.training.transforms import AugmentConfig


@dataclass(frozen=True)
class SegmentAugmentConfig(AugmentConfig):
    """DeepLab's augmentation: the classifier's (128-px crop, flip), with the random scale widened to 0.5–2.0."""

    scale_range: tuple[float, float] = (0.5, 2.0)


@dataclass(frozen=True)
class SegmentTrainConfig(TrainConfig):
    """The classifier's training settings (SGD, momentum 0.9, weight decay 1e-4, poly 0.9, head at 10× the
    backbone's rate) with DeepLab's where they differ (see the module docstring)."""

    epochs: int = 30
    batch_size: int = 8
    lr: float = 0.01  # the encoder's; the decoder and head get lr * head_lr_mult (see the module docstring)
    freeze_bn: bool = False
    augment: SegmentAugmentConfig = field(default_factory=SegmentAugmentConfig)


@dataclass(frozen=True)
class SegmentConfig:
    """The ``segment:`` section: the network, its training and its inference."""

    model: SegmenterConfig = field(default_factory=SegmenterConfig)
    train: SegmentTrainConfig = field(default_factory=SegmentTrainConfig)
    scales: tuple[float, ...] = (1.0, 0.75, 1.25)  # inference: softmax averaged over these scales ...
    flip: bool = True  # ... and their horizontal flips
    refine: tuple[str, ...] = ()  # refiners applied to the predicted class probabilities, e.g. ("crf",)
    ceiling: bool = True  # in a pipeline run: also train this recipe on ground-truth masks (the fully supervised ceiling)


class PixelCrossEntropy(Objective):
    """Cross-entropy averaged over the labelled pixels; 255 is ignored.

    The sum is divided by the number of labelled pixels with at least 1, so a batch whose crops are all
    ignore (possible with confident pseudo masks) contributes 0 rather than the NaN of ``reduction="mean"``.
    """

    name = "pixel_ce"

    def forward(self, model: torch.nn.Module, images: torch.Tensor, masks: torch.Tensor,
                progress: float) -> tuple[torch.Tensor, dict[str, float]]:
        loss = labelled_cross_entropy(model(images), masks)
        return loss, {"ce": float(loss.detach())}

    def batch_weight(self, targets: torch.Tensor) -> float:
        """The labelled pixels, which the mean divides by."""
        return float((targets != IGNORE_INDEX).sum())


def labelled_cross_entropy(logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """(B, L, H, W) logits against (B, H, W) label maps: the mean over pixels not labelled 255 (0 if none)."""
    total = F.cross_entropy(logits, masks, ignore_index=IGNORE_INDEX, reduction="sum")
    return total / (masks != IGNORE_INDEX).sum().clamp_min(1)


def check_config(cfg: SegmentConfig) -> None:
    crop = cfg.train.augment.crop_size
    if crop % cfg.model.output_stride:
        raise ConfigError(f"segment.train.augment.crop_size ({crop}) must be a multiple of "
                          f"segment.model.output_stride ({cfg.model.output_stride})")
    if not cfg.scales or min(cfg.scales) <= 0:
        raise ConfigError(f"segment.scales must be positive numbers, got {list(cfg.scales)}")


def train_segmenter(
    cfg: SegmentConfig,
    dataset: WeakDataset,
    masks: MaskSource,
    out_dir: str | Path,
    resume: bool = True,
    progress: bool = True,
    on_step: Callable[[int, int], None] | None = None,
) -> TrainResult:
    """Train on ``dataset``'s images with ``masks`` (a folder of ``<stem>.png`` or ``GROUND_TRUTH``).

    Writes ``model.pt``, ``checkpoint.pt`` and ``train_log.csv`` in ``out_dir`` and returns the model's
    path and training seconds. Every mask is checked before the first step. A checkpoint made with another
    configuration or on other masks is refused. ``on_step(epoch, step)`` runs after each step (tests simulate a kill with it).
    """
    check_config(cfg)
    mask_set = mask_dataset(dataset, masks)
    check_masks(mask_set)
    torch.manual_seed(cfg.train.seed)  # the decoder's initialisation is part of "same seed, same result"
    model = build_segmenter(cfg.model, dataset.num_classes)
    pairs = MaskedImages(dataset, mask_set, model.mean_std, cfg.train.augment, cfg.train.seed)
    identity = {"segmenter": asdict(cfg.model), "num_classes": dataset.num_classes, "masks": describe_masks(masks)}
    return train_classifier(model, dataset, cfg.train, out_dir, objective=PixelCrossEntropy(), resume=resume,
                            identity=identity, progress=progress, on_step=on_step, pairs=pairs, drop_last=True)


def load_segmenter(cfg: SegmentConfig, num_classes: int, path: str | Path) -> Segmenter:
    """The segmenter written by :func:`train_segmenter` (in eval mode); no ImageNet weights are loaded first."""
    model = build_segmenter(replace(cfg.model, pretrained=None), num_classes)
    return load_trained(model, path)
