"""(image, label map) pairs for training a segmenter on any mask source.

A mask source is either a folder of label PNGs named ``<stem>.png`` (pseudo masks written by
:func:`scarce.pseudo.masks.save_label_png`: VOC palette, 0 background, ``c + 1`` class c, 255 ignore) or
:data:`GROUND_TRUTH`, the dataset's own masks. Training on the ground truth of the train split with the
same recipe is the fully supervised ceiling; nothing else differs.

Both are read through :meth:`WeakDataset.load_mask`, so a pseudo mask is checked exactly as a ground-truth
mask is (the same size as its image, values in 0..C or 255), and every file is checked before training
starts: a bad file fails in seconds, naming it, rather than epochs later.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Final

import numpy as np
import torch
from torch.utils.data import Dataset

from scarce.data.base import WeakDataset
from scarce.errors import DataError
from scarce.training.transforms import AugmentConfig, augment_pair, sample_generator, to_tensor


class _GroundTruth:
    """The mask source "the dataset's own label maps" (see :data:`GROUND_TRUTH`)."""

    def __repr__(self) -> str:
        return "GROUND_TRUTH"


GROUND_TRUTH: Final = _GroundTruth()
MaskSource = str | Path | _GroundTruth


def mask_dataset(dataset: WeakDataset, masks: MaskSource) -> WeakDataset:
    """A dataset whose :meth:`~WeakDataset.load_mask` returns the training masks of ``dataset``'s samples.

    For a folder it is a plain :class:`WeakDataset` whose samples point at ``<folder>/<stem>.png`` (the base
    reader, whatever ``dataset``'s own type reads its ground truth from); samples keep their stems and order.
    """
    if isinstance(masks, _GroundTruth):
        return dataset
    folder = Path(masks)
    if not folder.is_dir():
        raise DataError(folder, "pseudo-mask folder not found")
    samples = [dataclasses.replace(sample, mask_path=folder / f"{sample.stem}.png") for sample in dataset.samples]
    return WeakDataset(dataset.class_names, samples, folder, dataset.split)


def describe_masks(masks: MaskSource) -> str:
    """What a checkpoint records about its masks: resuming on other masks is refused."""
    return "ground truth" if isinstance(masks, _GroundTruth) else str(Path(masks).resolve())


def check_masks(masks: WeakDataset) -> None:
    """Read every label map once; the first bad one raises :class:`DataError` naming its file."""
    for sample in masks.samples:
        masks.load_mask(sample)


class MaskedImages(Dataset):
    """(normalised image (3, crop, crop), label map (crop, crop) int64) with augmentation seeded by
    (seed, epoch, index), as the classifier's images are, so a resumed run sees the same batches."""

    def __init__(self, images: WeakDataset, masks: WeakDataset, mean_std: tuple[tuple[float, ...], tuple[float, ...]],
                 cfg: AugmentConfig, seed: int) -> None:
        self.images, self.masks, self.mean_std, self.cfg, self.seed = images, masks, mean_std, cfg, seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.images.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = to_tensor(self.images.load_image(self.images.samples[index]), self.mean_std)
        mask = torch.from_numpy(self.masks.load_mask(self.masks.samples[index]).astype(np.int64))
        image, mask = augment_pair(image, mask, self.cfg, sample_generator(self.seed, self.epoch, index))
        assert mask is not None
        return image, mask
