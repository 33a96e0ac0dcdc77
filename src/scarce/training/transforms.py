"""Image tensors for training and inference.

Training augmentation follows the IRN recipe scaled to the image size (random rescale, horizontal flip,
random crop padded with the mean). Every random choice comes from a generator seeded by
(seed, epoch, sample index), so a batch is the same whether it is produced in the main process, in a
worker, or after a resume.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from scarce.io import IGNORE_INDEX


def to_tensor(image: np.ndarray, mean_std: tuple[tuple[float, ...], tuple[float, ...]]) -> torch.Tensor:
    """uint8 HxWx3 → normalised float (3, H, W)."""
    tensor = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).float().div_(255.0)
    mean = torch.tensor(mean_std[0]).view(3, 1, 1)
    std = torch.tensor(mean_std[1]).view(3, 1, 1)
    return (tensor - mean) / std


@dataclass(frozen=True)
class AugmentConfig:
    crop_size: int = 128
    scale_range: tuple[float, float] = (0.7, 1.3)
    hflip: bool = True


def sample_generator(seed: int, epoch: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, epoch, index])


def augment(image: torch.Tensor, cfg: AugmentConfig, rng: np.random.Generator) -> torch.Tensor:
    """Random rescale, flip and crop of a normalised (3, H, W) image to (3, crop, crop).

    Padding uses 0, which after normalisation is the dataset mean (as IRN pads normalised images).
    """
    return augment_pair(image, None, cfg, rng)[0]


def augment_pair(image: torch.Tensor, mask: torch.Tensor | None, cfg: AugmentConfig,
                 rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
    """:func:`augment` applied with one geometry to an image and its (H, W) label map.

    The label map is resized by nearest neighbour (``nearest-exact``: the pixel centres bilinear resizing
    uses) and padded with the ignore label, so padding never teaches "background". The random draws are
    those of :func:`augment`, in the same order, whether or not a label map comes along.
    """
    lo, hi = cfg.scale_range
    scale = float(rng.uniform(lo, hi))
    h, w = image.shape[1:]
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    image = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False)[0]
    if mask is not None:
        mask = F.interpolate(mask[None, None].float(), size=size, mode="nearest-exact")[0, 0].to(mask.dtype)
    if cfg.hflip and rng.random() < 0.5:
        image = image.flip(-1)
        if mask is not None:
            mask = mask.flip(-1)
    crop = cfg.crop_size
    h, w = image.shape[1:]
    out = image.new_zeros((3, crop, crop))
    out_mask = None if mask is None else mask.new_full((crop, crop), IGNORE_INDEX)
    # Place a crop-sized window over the image (or the image inside the window when it is smaller).
    top = int(rng.integers(0, abs(h - crop) + 1))
    left = int(rng.integers(0, abs(w - crop) + 1))
    src_t, dst_t = (top, 0) if h >= crop else (0, top)
    src_l, dst_l = (left, 0) if w >= crop else (0, left)
    ch, cw = min(h, crop), min(w, crop)
    out[:, dst_t : dst_t + ch, dst_l : dst_l + cw] = image[:, src_t : src_t + ch, src_l : src_l + cw]
    if out_mask is not None:
        out_mask[dst_t : dst_t + ch, dst_l : dst_l + cw] = mask[src_t : src_t + ch, src_l : src_l + cw]
    return out, out_mask
