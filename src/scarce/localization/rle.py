"""COCO run-length encoding of binary masks (the uncompressed form: ``{"size": [h, w], "counts": [...]}``).

Runs are taken in column-major (Fortran) order and start with a run of zeros (possibly empty), as COCO
and pycocotools define them; ``pycocotools.mask.frPyObjects`` reads this form directly.
"""

from __future__ import annotations

import numpy as np


def rle_encode(mask: np.ndarray) -> dict[str, list[int]]:
    """Binary (H, W) mask → ``{"size": [H, W], "counts": [zeros, ones, zeros, ...]}``."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"a mask must be 2-D, got shape {mask.shape}")
    flat = mask.astype(bool).ravel(order="F")
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        counts = [0] + counts
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": [int(c) for c in counts]}


def rle_decode(rle: dict[str, list[int]]) -> np.ndarray:
    """Inverse of :func:`rle_encode`; a count list that does not add up to H·W is an error."""
    height, width = (int(v) for v in rle["size"])
    counts = np.asarray(rle["counts"], dtype=np.int64)
    if counts.sum() != height * width or (counts < 0).any():
        raise ValueError(f"RLE counts sum to {int(counts.sum())}, expected {height * width}")
    values = np.arange(len(counts)) % 2 == 1
    return np.repeat(values, counts).reshape((height, width), order="F")
