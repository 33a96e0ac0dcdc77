"""EdgePredictMix and the mixing baselines (CutMix, ClassMix) on the single-stage network's predictions.

EdgePredictMix (seed ``001``), for each image i of a batch:

    M_dec^i = PAMR(D(E(I_i)))                        the decoder's class probabilities, refined on the image
    M_ep^i  = EP(M_dec^i)                            edges (Canny) in the probability domain → superpixels (the
                                                     connected components of the non-edge pixels) → each takes
                                                     its dominant class
    M_fg^i  = 1[∪_c {M_ep^i[c] > δ_fg}]              the union of the refined foregrounds
    I_{i→j} = I_i ⊙ M_fg^i + I_j ⊙ (1 − M_fg^i),     j ~ unif({1..B} \\ {i}),  and likewise the labels and M_rs

Choices where the seed leaves details open (each stated once, here):

- the decoder's softmax is taken over background and the image's own classes (the other logits masked),
  as every WSSS seed is restricted to the image-level labels (``infer_rsepm.py`` keeps the GT classes);
- Canny (``skimage.feature.canny``, σ and the hysteresis thresholds as options) runs on every probability
  plane, background included; a pixel is an edge if it is one in any plane. skimage's Canny never marks the
  outermost pixels, so an edge would stop one pixel short of the border and the superpixels on its two sides
  would join there: each plane is padded by one replicated pixel first and cropped after. Superpixels are
  the 4-connected components of the non-edge pixels (``scipy.ndimage.label``); an edge pixel is a superpixel
  of its own, so it keeps its own dominant class;
- "dominant class" = the class of largest mean probability over the superpixel; ``M_ep[c]`` is that mean on
  the superpixels whose dominant class is c and 0 elsewhere, so ``M_ep[c] > δ_fg`` asks that the superpixel be
  c's and confidently so;
- the mixed segmentation labels are CF of the mixed maps (CF is pixelwise, so it commutes with the binary
  mix): CF(M_ep) for EdgePredictMix; the baselines mix the unrefined prediction CF(M_dec), which is what
  separates EP from "simple synthesis with predicted masks" in the seed's comparison;
- CutMix (Yun et al.): one box per pair, area ratio 1 − λ with λ ~ U(0, 1), centre uniform, clipped;
  ClassMix (Olsson et al.): the pixels of ⌈n/2⌉ of the n foreground classes of argmax M_dec^i, drawn at random
  (the official ClassMix draws (n + n mod 2) / 2 classes).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from scipy import ndimage

MIXES = ("none", "epm", "cutmix", "classmix")


def edge_predict(probabilities: np.ndarray, sigma: float = 1.0, low: float = 0.1,
                 high: float = 0.2) -> np.ndarray:
    """EP of one (L, H, W) probability map (background first) → (L, H, W): on every superpixel, its dominant
    class's mean probability in that class's plane and 0 in the others."""
    from skimage.feature import canny

    planes, height, width = probabilities.shape
    edges = np.zeros((height, width), dtype=bool)
    for plane in probabilities:  # padded: Canny never marks the outermost pixels (see the module docstring)
        padded = np.pad(plane.astype(np.float64), 1, mode="edge")
        edges |= canny(padded, sigma=sigma, low_threshold=low, high_threshold=high, mode="nearest")[1:-1, 1:-1]
    regions, count = ndimage.label(~edges)
    regions[edges] = count + 1 + np.arange(int(edges.sum()))  # every edge pixel a superpixel of its own
    flat = regions.ravel()
    sizes = np.bincount(flat)
    means = np.stack([np.bincount(flat, weights=plane.ravel(), minlength=len(sizes)) for plane in probabilities])
    means = means / np.maximum(sizes, 1)
    dominant = means.argmax(axis=0)[flat]  # per pixel: its superpixel's dominant class
    value = means.max(axis=0)[flat]
    out = np.zeros((planes, height * width), dtype=np.float32)
    out[dominant, np.arange(height * width)] = value
    return out.reshape(planes, height, width)


def foreground_union(maps: torch.Tensor, threshold: float) -> torch.Tensor:
    """M_fg of (B, C, H, W) foreground class maps: 1 where any class exceeds ``threshold`` (float, (B, H, W))."""
    return (maps > threshold).any(dim=1).to(maps.dtype if maps.is_floating_point() else torch.float32)


def partners(batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """j for every i, uniform over the batch without i (needs B ≥ 2)."""
    if batch < 2:
        raise ValueError("mixing needs batches of at least 2 images")
    return (torch.arange(batch) + torch.randint(1, batch, (batch,), generator=generator)) % batch


def mix(values: torch.Tensor, fg: torch.Tensor, pair: torch.Tensor) -> torch.Tensor:
    """values_i where fg_i, values_{pair[i]} elsewhere; ``values`` (B, ..., H, W), ``fg`` (B, H, W) in {0, 1}.

    Floating values mix as v_i ⊙ M + v_j ⊙ (1 − M); label maps (integers) are selected, which is the same."""
    mask = fg.reshape(fg.shape[0], *([1] * (values.ndim - 3)), *fg.shape[1:])
    if values.is_floating_point():
        return values * mask + values[pair] * (1 - mask)
    return torch.where(mask > 0.5, values, values[pair])


def cutmix_boxes(batch: int, height: int, width: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """(B, H, W) box masks of CutMix: the box covers about 1 − λ of the image, λ ~ U(0, 1)."""
    lam = torch.rand(batch, generator=generator)
    centres = torch.rand(batch, 2, generator=generator)
    out = torch.zeros(batch, height, width)
    for b in range(batch):
        ratio = math.sqrt(1.0 - float(lam[b]))
        cy, cx = int(centres[b, 0] * height), int(centres[b, 1] * width)
        half_h, half_w = int(height * ratio) // 2, int(width * ratio) // 2
        out[b, max(cy - half_h, 0):min(cy + half_h, height), max(cx - half_w, 0):min(cx + half_w, width)] = 1.0
    return out


def classmix_masks(labels: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """(B, H, W) masks of ClassMix from (B, H, W) predicted label maps (0 = background): ⌈n/2⌉ random
    foreground classes of each image."""
    out = torch.zeros(labels.shape, dtype=torch.float32)
    for b, row in enumerate(labels):
        present = [int(c) for c in row.unique() if c > 0]
        if not present:
            continue
        order = torch.randperm(len(present), generator=generator)[: (len(present) + 1) // 2]
        chosen = torch.tensor([present[i] for i in order.tolist()])
        out[b] = torch.isin(row, chosen).float()
    return out


def restricted_softmax(logits: torch.Tensor, keys: Sequence[Sequence[int]]) -> torch.Tensor:
    """Softmax of (B, C + 1, H, W) logits over background and each image's classes; 0 for the others."""
    allowed = torch.zeros(logits.shape[:2], dtype=torch.bool, device=logits.device)
    allowed[:, 0] = True
    for i, k in enumerate(keys):
        allowed[i, [c + 1 for c in k]] = True
    masked = logits.masked_fill(~allowed[:, :, None, None], float("-inf"))
    return masked.softmax(dim=1)
