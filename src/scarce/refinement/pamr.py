"""PAMR: pixel-adaptive mask refinement (Araslanov & Roth, CVPR'20; visinf/1-stage-wseg ``models/mods/pamr.py``).

Each iteration replaces a pixel's class scores by a convex combination of its 8 neighbours at every dilation
(48 taps for dilations 1, 2, 4, 8, 12, 24), weighted by colour similarity:

    κ_ij = mean over RGB of  −|I_i − I_j| / (1e-8 + σ · std_i),     α_i· = softmax_j(κ_ij),     m_i ← Σ_j α_ij m_j

as the official code computes it:

- the centre pixel is *not* a tap of the update (8 neighbours per dilation); it is one of the 9 values per
  dilation whose standard deviation ``std_i`` scales the colour differences, and ``std_i`` is taken per
  channel over all 9 × len(dilations) values at once (the centre counted once per dilation; unbiased, as
  ``torch.std``);
- borders replicate the edge pixel (``F.pad(..., mode="replicate")``), for the image and for the masks;
- σ = 0.1; the colour affinities are computed once, the masks are iterated (``PAMR_ITER`` = 10).

The official code reads the ImageNet-normalised image; |I_i − I_j| / std_i does not change under a per-channel
affine map (up to the 1e-8), so the raw RGB in [0, 1] of the refinement interface gives the same weights.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F

from scarce.errors import ConfigError
from scarce.refinement.base import Refiner, register_refiner

# the 8 neighbours of a 3×3 kernel in the official kernel order (row-major, centre left out)
NEIGHBOURS = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))
STD_EPS = 1e-8  # the official code's guard in the affinity's denominator


def _shifted(padded: torch.Tensor, dilation: int, dy: int, dx: int, size: tuple[int, int]) -> torch.Tensor:
    """The value at ``dilation · (dy, dx)`` from every pixel, read from a map padded by ``dilation``."""
    top, left = dilation + dy * dilation, dilation + dx * dilation
    return padded[..., top: top + size[0], left: left + size[1]]


def pamr_affinity(images: torch.Tensor, dilations: Sequence[int], sigma: float) -> torch.Tensor:
    """(B, 3, H, W) images → (B, 8·len(dilations), H, W) weights: softmax over the taps of each pixel.

    Tap by tap (sums for the mean and the unbiased variance, then one κ plane per tap), so that no
    (B, 3, 54, H, W) stack is materialised.
    """
    size = images.shape[-2:]
    padded = {d: F.pad(images, [d] * 4, mode="replicate") for d in dilations}
    local = [(d, dy, dx) for d in dilations for dy, dx in ((0, 0),) + NEIGHBOURS]
    mean = sum(_shifted(padded[d], d, dy, dx, size) for d, dy, dx in local) / len(local)
    variance = sum((_shifted(padded[d], d, dy, dx, size) - mean) ** 2 for d, dy, dx in local) / (len(local) - 1)
    scale = STD_EPS + sigma * variance.sqrt()
    kappa = torch.stack([-((_shifted(padded[d], d, dy, dx, size) - images).abs() / scale).mean(dim=1)
                         for d in dilations for dy, dx in NEIGHBOURS], dim=1)
    return torch.softmax(kappa, dim=1)


def pamr(images: torch.Tensor, masks: torch.Tensor, dilations: Sequence[int] = (1, 2, 4, 8, 12, 24),
         iterations: int = 10, sigma: float = 0.1) -> torch.Tensor:
    """Refine (B, K, H, W) masks on (B, 3, H, W) images; the result stays in the range of the input."""
    weights = pamr_affinity(images, dilations, sigma).unsqueeze(2)  # (B, T, 1, H, W)
    size = masks.shape[-2:]
    for _ in range(iterations):
        refined = torch.zeros_like(masks)
        tap = 0
        for d in dilations:  # tap by tap: never the (B, K, T, H, W) stack of shifted masks
            padded = F.pad(masks, [d] * 4, mode="replicate")
            for dy, dx in NEIGHBOURS:
                refined.addcmul_(weights[:, tap], _shifted(padded, d, dy, dx, size))
                tap += 1
        masks = refined
    return masks


def stack_classes(cams: Sequence[torch.Tensor]) -> torch.Tensor:
    """Per-image (K_i, H, W) maps → one (B, max K_i, H, W) batch, zero-padded (the padding is cut off again)."""
    depth = max(cam.shape[0] for cam in cams)
    return torch.stack([F.pad(cam, (0, 0, 0, 0, 0, depth - cam.shape[0])) for cam in cams])


def check_batch(images: torch.Tensor, cams: Sequence[torch.Tensor], keys: Sequence[Sequence[int]]) -> None:
    """The refinement interface's shapes, so that a wrong call fails here and not deep inside a refiner."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (B, 3, H, W), got {tuple(images.shape)}")
    if len(cams) != images.shape[0] or len(keys) != images.shape[0]:
        raise ValueError(f"{images.shape[0]} images but {len(cams)} CAM sets and {len(keys)} key lists")
    for cam, classes in zip(cams, keys):
        if cam.ndim != 3 or cam.shape[1:] != images.shape[2:] or cam.shape[0] != len(classes):
            raise ValueError(f"CAMs {tuple(cam.shape)} do not match {len(classes)} classes on "
                             f"{tuple(images.shape[2:])} images")


@register_refiner("pamr")
class PamrRefiner(Refiner):
    """Options: ``dilations`` (default 1, 2, 4, 8, 12, 24), ``iterations`` (10), ``sigma`` (0.1), the official
    values. They are kept on the 128-px scenes (the refiner runs at image resolution, where the 24-px taps
    still fall inside a 128-px image); a config may lower them, nothing here is tuned on the scenes."""

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        super().__init__(options)
        unknown = set(self.options) - {"dilations", "iterations", "sigma"}
        if unknown:
            raise ConfigError(f"refine pamr: unknown option(s) {sorted(unknown)}; known: dilations, iterations, sigma")
        self.dilations = tuple(int(d) for d in self.options.get("dilations", (1, 2, 4, 8, 12, 24)))
        self.iterations = int(self.options.get("iterations", 10))
        self.sigma = float(self.options.get("sigma", 0.1))
        if not self.dilations or min(self.dilations) < 1:
            raise ConfigError(f"refine pamr: dilations must be positive integers, got {list(self.dilations)}")
        if self.iterations < 0 or self.sigma <= 0:
            raise ConfigError(f"refine pamr: need iterations ≥ 0 and sigma > 0, got {self.iterations}, {self.sigma}")

    def __call__(self, images: torch.Tensor, cams: Sequence[torch.Tensor],
                 keys: Sequence[Sequence[int]]) -> list[torch.Tensor]:
        check_batch(images, cams, keys)
        if not len(cams) or max(cam.shape[0] for cam in cams) == 0:
            return [cam.clone() for cam in cams]
        with torch.no_grad():
            batch = stack_classes([cam.to(images.device, images.dtype) for cam in cams])
            refined = pamr(images, batch, self.dilations, self.iterations, self.sigma)
        return [out[:cam.shape[0]].to(cam.dtype) for out, cam in zip(refined, cams)]
