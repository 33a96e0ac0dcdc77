"""CAMs → label maps, with the background rule of the IRN template.

CAMs of one image are a float array ``(K, H, W)`` in [0, 1] holding only the image's positive classes; ``keys``
gives the class index (0..C-1) of each plane. Label maps use 0 = background, ``key + 1`` = class, 255 = ignore.

The background rule is IRN's: prepend a constant plane at the threshold and take the argmax, so the
background wins ties (a pixel is foreground only if its best class score is *strictly* above the
threshold). The threshold is compared in the CAM's own dtype, as ``np.pad`` of a float32 CAM does in IRN,
so a float32 score equal to ``float32(t)`` stays background.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from scarce.io import IGNORE_INDEX as IGNORE_LABEL
from scarce.io import save_label_png, voc_palette  # noqa: F401  (re-exported: masks are written with them)


def top_class(cams: np.ndarray, keys: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Best class score and its label (``key + 1``) per pixel; with K = 0 the score is ``-inf`` everywhere.

    Shared by :func:`cams_to_labels` and the threshold sweep in ``scarce.metrics`` so that both apply the
    same rule. Equal class scores go to the plane listed first (``np.argmax`` order, as in IRN).
    """
    cams = np.asarray(cams)
    if cams.ndim != 3:
        raise ValueError(f"CAMs must have shape (K, H, W), got {cams.shape}")
    if not np.issubdtype(cams.dtype, np.floating):
        cams = cams.astype(np.float64)
    keys = np.asarray(keys, dtype=np.int64).reshape(-1)
    if len(keys) != cams.shape[0]:
        raise ValueError(f"{len(keys)} keys for {cams.shape[0]} CAM planes")
    if len(keys) and (keys.min() < 0 or keys.max() >= IGNORE_LABEL - 1):
        raise ValueError(f"class keys must lie in [0, {IGNORE_LABEL - 1}), got {keys.tolist()}")
    height, width = cams.shape[1:]
    if len(keys) == 0:
        return np.full((height, width), -np.inf, dtype=cams.dtype), np.zeros((height, width), dtype=np.uint8)
    score = cams.max(axis=0)
    if np.isnan(score).any():
        raise ValueError("CAMs contain NaN")
    labels = (keys[cams.argmax(axis=0)] + 1).astype(np.uint8)
    return score, labels


def cams_to_labels(cams: np.ndarray, keys: Sequence[int] | np.ndarray, bg_threshold: float) -> np.ndarray:
    """Label map (H, W) ``uint8``: ``key + 1`` where the best class score exceeds ``bg_threshold``, else 0."""
    score, labels = top_class(cams, keys)
    foreground = score > np.asarray(bg_threshold, dtype=score.dtype)
    return np.where(foreground, labels, 0).astype(np.uint8)


def cams_to_confident_labels(
    cams: np.ndarray, keys: Sequence[int] | np.ndarray, fg_threshold: float, bg_threshold: float
) -> np.ndarray:
    """IRN's confident seeds without the CRF: sure foreground keeps its class, sure background is 0, the rest 255.

    A pixel is sure foreground when it is foreground under the high threshold and sure background when it
    is background under the low threshold; between the two it is ignored, so that the affinity learner
    never trains on the uncertain band around object borders.
    """
    if fg_threshold < bg_threshold:
        raise ValueError(f"fg_threshold ({fg_threshold}) must be >= bg_threshold ({bg_threshold})")
    score, labels = top_class(cams, keys)
    sure_fg = score > np.asarray(fg_threshold, dtype=score.dtype)
    sure_bg = ~(score > np.asarray(bg_threshold, dtype=score.dtype))
    out = np.full(score.shape, IGNORE_LABEL, dtype=np.uint8)
    out[sure_fg] = labels[sure_fg]
    out[sure_bg] = 0
    return out
