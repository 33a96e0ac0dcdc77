"""Where a mask's errors lie: false positives by distance to the nearest object, misses by depth inside it.

FP and FN say how much a seed is wrong; this says *which* failure it is. CAM methods target different
ones: AdvCAM, RIB, Puzzle-CAM and class-specific erasing fix *partial activation* (a large object lit only
on its most discriminative part), whose misses lie deep inside objects; context methods fix *leakage onto
co-occurring background*, whose false positives lie far from any object. A seed whose errors sit within a
feature stride of the object boundary suffers neither, only the coarse resolution of the CAM, which
refinement (PAMR, CRF, random walk) addresses.

Distances are Euclidean, in pixels, computed per image with ``scipy.ndimage.distance_transform_edt``:

- a false positive is a ground-truth background pixel predicted as any object class; its distance is to
  the nearest pixel that is not ground-truth background (objects and the ignore band, which lies on
  object boundaries);
- a miss is a ground-truth object pixel predicted as background; its depth is its distance to the
  nearest pixel of another ground-truth label (background, another class or the ignore band), i.e. to
  its own region's boundary. Object pixels given another object class are confusions, counted by
  neither profile.

Errors are binned by ``edges`` (upper bounds, inclusive): bin i holds distances in (edges[i-1], edges[i]],
the last bin everything beyond ``edges[-1]``. A class covering the whole image has no boundary, and an image
without objects has nothing to be near: their misses and false positives are counted in the last bin.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import ndimage

from scarce.metrics.segmentation import _check_same_shape

DEFAULT_EDGES: tuple[float, ...] = (4.0, 8.0, 16.0)


class ErrorDistanceProfile:
    """Streaming histogram of false-positive distances and miss depths (``update`` / ``merge`` / ``compute``)."""

    def __init__(self, edges: Sequence[float] = DEFAULT_EDGES, ignore_index: int = 255) -> None:
        grid = np.asarray(edges, dtype=np.float64).reshape(-1)
        if grid.size == 0 or (grid <= 0).any() or (np.diff(grid) <= 0).any():
            raise ValueError(f"edges must be positive and strictly increasing, got {list(edges)}")
        self.edges = grid
        self.ignore_index = ignore_index
        self.false_positive = np.zeros(grid.size + 1, dtype=np.int64)
        self.missed = np.zeros(grid.size + 1, dtype=np.int64)

    def _bin(self, distances: np.ndarray) -> np.ndarray:
        return np.bincount(np.searchsorted(self.edges, distances, side="left"), minlength=self.edges.size + 1)

    def update(self, pred: np.ndarray, gt: np.ndarray) -> None:
        """Add one (prediction, ground truth) pair of label maps; 0 is background in both."""
        pred, gt = np.asarray(pred), np.asarray(gt)
        _check_same_shape(pred.shape, gt.shape)
        background = gt == 0
        objects = ~background & (gt != self.ignore_index)
        false_positive = background & (pred != 0)
        if false_positive.any():
            if background.all():  # no object at all: every false positive is as far from one as can be
                self.false_positive[-1] += int(false_positive.sum())
            else:
                self.false_positive += self._bin(ndimage.distance_transform_edt(background)[false_positive])
        missed = objects & (pred == 0)
        for label in np.unique(gt[missed]):
            region = gt == label
            here = missed & region
            if region.all():
                self.missed[-1] += int(here.sum())
            else:
                self.missed += self._bin(ndimage.distance_transform_edt(region)[here])

    def merge(self, other: ErrorDistanceProfile) -> None:
        """Add the counts of a profile that saw another shard of the data."""
        if not np.array_equal(other.edges, self.edges) or other.ignore_index != self.ignore_index:
            raise ValueError("cannot merge profiles with different edges or ignore_index")
        self.false_positive += other.false_positive
        self.missed += other.missed

    def compute(self) -> dict[str, object]:
        """Counts and shares per bin, plus the two summary shares that name the failure.

        ``fp_far``: share of false positives farther than ``edges[-1]`` from any object (context leakage);
        ``fn_deep``: share of misses deeper than ``edges[-1]`` inside an object (partial activation).
        Shares are None (JSON null) when there is no error of that kind: a share of nothing is undefined, and
        NaN would make the run's JSON unreadable to strict parsers.
        """
        def shares(counts: np.ndarray) -> list[float] | list[None]:
            total = counts.sum()
            return (counts / total).tolist() if total else [None] * counts.size

        fp_shares, fn_shares = shares(self.false_positive), shares(self.missed)
        labels = [f"<={e:g}" for e in self.edges] + [f">{self.edges[-1]:g}"]
        return {
            "edges": self.edges.tolist(), "bins": labels,
            "fp_counts": self.false_positive.tolist(), "fp_shares": fp_shares,
            "fn_counts": self.missed.tolist(), "fn_shares": fn_shares,
            "fp_far": fp_shares[-1], "fn_deep": fn_shares[-1],
        }
