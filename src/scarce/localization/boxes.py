"""Boxes from class activation maps, at one threshold or at a whole grid of thresholds.

Two rules, two conventions.

Rules (what becomes a box once the map is binarised at ``τ · standard``):

- ``largest``: one box around the largest connected component (the CAM paper's rule, Zhou et al. CVPR'16:
  "threshold at 20% of the max, box covering the largest connected component"; MaxBoxAccV1);
- ``all``: one box per connected component ("multi-contour", MaxBoxAccV2).

The *standard* the fraction τ is taken of is the map's maximum (MaS) or a percentile of it (PaS, Bae et al.,
default 98th percentile): PaS makes the threshold insensitive to a few extreme pixels.

Conventions (how pixels become numbers). Boxes are always returned as ``(x0, y0, x1, y1)`` with
``x1``/``y1`` **exclusive** (the ``scarce.data.Box`` convention), so a box's area is ``(x1-x0)·(y1-y0)``.

- ``exact``: the map is compared in floating point (``map > τ·standard``, as OpenCV's ``THRESH_BINARY``
  is strict); components are 8-connected; "largest" means most pixels (first in raster order on a tie);
  the box is tight around the component; an empty map gives no box.
- ``wsolevaluation``: the semantics of clovaai/wsolevaluation's ``compute_bboxes_from_scoremaps``
  (``cv2.threshold`` + ``findContours(RETR_TREE)`` + ``boundingRect``), reproduced without OpenCV:
  the map (in [0, 1]) is quantised as ``uint8(map·255)`` and binarised with ``> int(τ·standard)``;
  "largest" is by ``cv2.contourArea`` of the outer contour, i.e. the area of the polygon through the
  centres of the component's boundary pixels, holes included, which is computed without tracing as
  Σ over 2×2 pixel windows of the filled component (1 if 4 pixels are in it, ½ if 3; thin lines have
  area 0); ties go to the component found last in raster order (OpenCV lists contours in reverse);
  hole contours count as contours for ``all``; the reference writes a box as ``(x, y, x+w, y+h)`` clipped
  to ``(W-1, H-1)`` and scores it with inclusive-pixel IoU (``+1`` on each side), so here that box is
  ``(x, y, min(x+w, W-1)+1, min(y+h, H-1)+1)`` exclusive (one pixel larger than the component unless
  clipped); an empty map gives the reference's box ``(0, 0, 0, 0)``, i.e. the pixel ``(0, 0, 1, 1)``.
  Ground-truth boxes are scored as the reference scores its metadata, whose ``x1`` is inclusive: use
  :func:`gt_boxes_for` to convert.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import ndimage

from scarce.errors import ConfigError

RULES = ("largest", "all")
STANDARDS = ("max", "percentile")
CONVENTIONS = ("exact", "wsolevaluation")
_EIGHT = np.ones((3, 3), dtype=bool)
_FOUR = ndimage.generate_binary_structure(2, 1)


def _check(name: str, value: str, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise ConfigError(f"unknown {name} {value!r}; choose from {', '.join(allowed)}")


def check_scoremap(scoremap: np.ndarray, unit_range: bool) -> np.ndarray:
    """A finite 2-D float map (in [0, 1] when ``unit_range``): the wsolevaluation validity rules, as ValueError."""
    scoremap = np.asarray(scoremap)
    if scoremap.ndim != 2:
        raise ValueError(f"a score map must be 2-D (H, W), got shape {scoremap.shape}")
    if not np.issubdtype(scoremap.dtype, np.floating):
        scoremap = scoremap.astype(np.float64)
    if not np.isfinite(scoremap).all():
        raise ValueError("score map contains NaN or infinite values")
    if unit_range and scoremap.size and (scoremap.min() < 0 or scoremap.max() > 1):
        raise ValueError(f"score map must lie in [0, 1], got {scoremap.min():.4g}..{scoremap.max():.4g}")
    return scoremap


def binarization(
    scoremap: np.ndarray,
    thresholds: Sequence[float] | np.ndarray,
    standard: str = "max",
    percentile: float = 98.0,
    convention: str = "exact",
) -> tuple[np.ndarray, np.ndarray]:
    """``(values, cuts)`` such that the binary map at ``thresholds[j]`` is ``values > cuts[j]``.

    The standard is computed once per map and shared by all thresholds.
    """
    _check("threshold standard", standard, STANDARDS)
    _check("box convention", convention, CONVENTIONS)
    fractions = np.asarray(thresholds, dtype=np.float64).reshape(-1)
    scoremap = check_scoremap(scoremap, unit_range=convention == "wsolevaluation")
    if convention == "wsolevaluation":
        values: np.ndarray = (scoremap * 255).astype(np.uint8)
        level = float(values.max() if standard == "max" else np.percentile(values, percentile)) if values.size else 0.0
        cuts = np.floor(fractions * level)  # int() of a non-negative number
    else:
        values = scoremap
        level = float(values.max() if standard == "max" else np.percentile(values, percentile)) if values.size else 0.0
        cuts = fractions * level
    return values, cuts


@dataclass(frozen=True)
class ThresholdBoxes:
    """Every candidate box of one map at every threshold of a grid.

    ``boxes`` (M, 4) exclusive ``x0, y0, x1, y1``; ``threshold`` (M,) index into the grid of each box;
    ``largest`` (M,) whether the box is the one the ``largest`` rule picks at its threshold (so
    ``boxes[largest]`` has exactly one row per threshold with a box); ``num_thresholds`` is the grid size.
    """

    boxes: np.ndarray
    threshold: np.ndarray
    largest: np.ndarray
    num_thresholds: int

    def select(self, rule: str) -> tuple[np.ndarray, np.ndarray]:
        """``(boxes, threshold index)`` of the candidates a rule keeps."""
        _check("box rule", rule, RULES)
        keep = self.largest if rule == "largest" else np.ones(len(self.boxes), dtype=bool)
        return self.boxes[keep], self.threshold[keep]


def _slice_boxes(slices: list[tuple[slice, slice] | None]) -> np.ndarray:
    """Tight exclusive boxes of ``ndimage.find_objects`` slices."""
    return np.asarray([(s[1].start, s[0].start, s[1].stop, s[0].stop) for s in slices if s is not None],
                      dtype=np.int64).reshape(-1, 4)


def _fill_area(region: np.ndarray) -> float:
    """Contour-polygon area of one component with its holes filled: Σ 2×2 windows (4 inside → 1, 3 → ½)."""
    m = ndimage.binary_fill_holes(region).astype(np.int8)
    inside = m[:-1, :-1] + m[:-1, 1:] + m[1:, :-1] + m[1:, 1:]
    return float((inside == 4).sum() + 0.5 * (inside == 3).sum())


def _holes(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Labels of the holes (4-connected background regions not touching the border) of ``mask``."""
    background, count = ndimage.label(~mask, structure=_FOUR)
    border = np.zeros(count + 1, dtype=bool)
    for edge in (background[0], background[-1], background[:, 0], background[:, -1]):
        border[edge] = True
    remap = np.cumsum(~border) * ~border  # border regions → 0, holes → 1..n in raster order
    remap[0] = 0
    return remap[background], int(remap.max())


class _Levels:
    """One map seen through a sorted grid of cuts, with the per-window facts every threshold shares.

    A pixel's level is how many cuts lie strictly below its value, so the binary map at sorted cut j is
    ``level > j``. For each 2×2 window the corners sorted by level give, at any j, how many of its pixels
    are foreground (the k-th largest corner exceeds j), from which follow the contour areas (windows with
    3 or 4 foreground pixels) and Gray's bit-quad Euler numbers, without a pass over the pixels per cut.
    """

    def __init__(self, values: np.ndarray, sorted_cuts: np.ndarray, windows: bool) -> None:
        self.levels = np.searchsorted(sorted_cuts, values, side="left").astype(np.int32)
        self.row_peak, self.col_peak = self.levels.max(axis=1), self.levels.max(axis=0)
        ordered = np.sort(self.levels.ravel())
        self.foreground = ordered.size - np.searchsorted(ordered, np.arange(len(sorted_cuts)), side="right")
        if windows:
            self._prepare_windows(len(sorted_cuts))

    @staticmethod
    def _ranked(levels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        corners = np.stack([levels[:-1, :-1], levels[:-1, 1:], levels[1:, :-1], levels[1:, 1:]]).reshape(4, -1)
        order = np.argsort(-corners, axis=0, kind="stable")
        return np.take_along_axis(corners, order, axis=0), order

    def _prepare_windows(self, num_cuts: int) -> None:
        cuts = np.arange(num_cuts)

        def above(values: np.ndarray) -> np.ndarray:
            ordered = np.sort(values)
            return ordered.size - np.searchsorted(ordered, cuts, side="right")

        # Euler number of the zero-padded map: E = (n1 - n3 - 2 n_diagonal) / 4 (8-connectivity)
        ranked, order = self._ranked(np.pad(self.levels, 1))
        top_two = np.sort(order[:2], axis=0)
        diagonal = ((top_two[0] == 0) & (top_two[1] == 3)) | ((top_two[0] == 1) & (top_two[1] == 2))
        n1 = above(ranked[0]) - above(ranked[1])
        n3 = above(ranked[2]) - above(ranked[3])
        nd = above(ranked[1][diagonal]) - above(ranked[2][diagonal])
        self.euler = (n1 - n3 - 2 * nd) // 4
        # windows of the unpadded map, by decreasing third-largest corner: those with >= 3 foreground
        # pixels at cut j are a prefix; each is owned by the component of its largest corner
        height, width = self.levels.shape
        if height < 2 or width < 2:
            self.third = np.zeros(0, np.int32)
            return
        ranked, order = self._ranked(self.levels)
        by_third = np.argsort(-ranked[2], kind="stable")
        self.third, self.fourth = ranked[2][by_third], ranked[3][by_third]
        window_row, window_col = np.divmod(by_third, width - 1)
        top = order[0][by_third]
        self.owner_row, self.owner_col = window_row + top // 2, window_col + top % 2
        self.prefix = np.searchsorted(-self.third, -cuts, side="left")  # windows whose third corner exceeds j

    def contour_areas(self, j: int, labels: np.ndarray, count: int, top: int, left: int) -> np.ndarray:
        """Per component of the map at cut j (``labels`` of the crop at ``top, left``), its unfilled contour area."""
        if not len(self.third):
            return np.zeros(count)
        n = int(self.prefix[j])
        owner = labels[self.owner_row[:n] - top, self.owner_col[:n] - left]
        weight = np.where(self.fourth[:n] > j, 1.0, 0.5)
        return np.bincount(owner, weights=weight, minlength=count + 1)[1:]


def _components(levels: _Levels, j: int, convention: str) -> tuple[np.ndarray, np.ndarray]:
    """Candidate boxes (exclusive) at sorted cut j and whether each is the ``largest`` rule's pick."""
    # masks shrink as the threshold rises: label only the rows and columns that hold foreground
    rows, cols = np.flatnonzero(levels.row_peak > j), np.flatnonzero(levels.col_peak > j)
    top, left = int(rows[0]), int(cols[0])
    mask = levels.levels[top : rows[-1] + 1, left : cols[-1] + 1] > j
    labels, count = ndimage.label(mask, structure=_EIGHT)
    slices = ndimage.find_objects(labels)
    boxes = _slice_boxes(slices) + np.array([left, top, left, top])
    chosen = np.zeros(count, dtype=bool)
    if convention == "exact":
        pixels = np.bincount(labels.ravel(), minlength=count + 1)[1:] if count > 1 else np.ones(1)
        chosen[int(np.argmax(pixels))] = True  # first maximum: earliest in raster order
        return boxes, chosen
    hole_boxes = np.zeros((0, 4), np.int64)
    holes = count - int(levels.euler[j])
    if holes:
        hole_labels, _ = _holes(mask)
        hole_slices = ndimage.find_objects(hole_labels)
        # a hole's contour runs through the pixels around it: its box is the hole's, one pixel wider per side
        hole_boxes = _slice_boxes(hole_slices) + np.array([left - 1, top - 1, left + 1, top + 1])
    if count > 1:
        areas = levels.contour_areas(j, labels, count, top, left)
        if holes:  # cv2.contourArea of an outer contour counts the holes inside it
            enclosing = set()
            for i, (hole_rows, hole_cols) in enumerate(hole_slices):
                # the pixel above a hole's first (raster-order) pixel belongs to the enclosing component
                first = hole_cols.start + int(np.argmax(hole_labels[hole_rows.start, hole_cols] == i + 1))
                enclosing.add(int(labels[hole_rows.start - 1, first]))
            for k in enclosing:
                areas[k - 1] = _fill_area(labels[slices[k - 1]] == k)
        chosen[count - 1 - int(np.argmax(areas[::-1]))] = True  # last maximum: OpenCV lists contours in reverse
    else:
        chosen[0] = True
    chosen = np.concatenate([chosen, np.zeros(len(hole_boxes), dtype=bool)])
    return np.concatenate([boxes, hole_boxes]), chosen


def threshold_boxes(
    scoremap: np.ndarray,
    thresholds: Sequence[float] | np.ndarray,
    standard: str = "max",
    percentile: float = 98.0,
    convention: str = "exact",
) -> ThresholdBoxes:
    """Candidate boxes of ``scoremap`` at every threshold (fractions of the standard), in one pass.

    Work shared across thresholds: the standard, the pixels' ranks among the cuts and the 2×2-window
    statistics are computed once per map; binary maps are nested, so thresholds with the same number of
    foreground pixels share one labelling (with the ``wsolevaluation`` quantisation at most 256 distinct
    maps exist however fine the grid); labelling is cropped to the rows/columns holding foreground, the
    hole search runs only when the Euler number says there are holes, and contour areas only when
    several components compete.
    """
    values, cuts = binarization(scoremap, thresholds, standard, percentile, convention)
    height, width = values.shape
    sort = np.argsort(cuts, kind="stable")
    levels = _Levels(values, cuts[sort], windows=convention == "wsolevaluation")
    empty = np.array([[0, 0, 1, 1]], np.int64) if convention == "wsolevaluation" else np.zeros((0, 4), np.int64)
    per_count: dict[int, tuple[np.ndarray, np.ndarray]] = {0: (empty, np.ones(len(empty), dtype=bool))}
    picked: list[tuple[np.ndarray, np.ndarray]] = [per_count[0]] * len(cuts)
    for rank, j in enumerate(sort.tolist()):
        count = int(levels.foreground[rank])
        if count not in per_count:
            boxes, chosen = _components(levels, rank, convention)
            if convention == "wsolevaluation":
                boxes = _wsol_clip(boxes, width, height)
            per_count[count] = (boxes, chosen)
        picked[j] = per_count[count]
    sizes = [len(boxes) for boxes, _ in picked]
    return ThresholdBoxes(
        boxes=np.concatenate([boxes for boxes, _ in picked]) if picked else np.zeros((0, 4), np.int64),
        threshold=np.repeat(np.arange(len(picked)), sizes),
        largest=np.concatenate([chosen for _, chosen in picked]) if picked else np.zeros(0, dtype=bool),
        num_thresholds=len(cuts),
    )


def _wsol_clip(tight: np.ndarray, width: int, height: int) -> np.ndarray:
    """Tight exclusive boxes → the reference's ``(x, y, min(x+w, W-1), min(y+h, H-1))`` read as inclusive."""
    out = tight.copy()
    out[:, 2] = np.minimum(tight[:, 2], width - 1) + 1
    out[:, 3] = np.minimum(tight[:, 3], height - 1) + 1
    return out


def gt_boxes_for(boxes: Sequence[Sequence[float]] | np.ndarray, convention: str) -> np.ndarray:
    """Ground-truth boxes ``(x0, y0, x1, y1)`` (exclusive, scarce's convention) as a convention scores them.

    ``wsolevaluation`` reads its metadata's ``x1, y1`` as inclusive, i.e. one pixel more than scarce's.
    """
    _check("box convention", convention, CONVENTIONS)
    array = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if convention == "wsolevaluation":
        array = array + np.array([0.0, 0.0, 1.0, 1.0])
    return array


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of ``a`` (N, 4) with every box of ``b`` (M, 4), exclusive corners → (N, M).

    A pair whose union is empty scores 0 (as wsolevaluation's degenerate case).
    """
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    width = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    height = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = width * height
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    out = np.zeros_like(inter)
    np.divide(inter, union, out=out, where=union > 0)
    return out


@dataclass(frozen=True)
class CamBox:
    """One box from a CAM: exclusive corners, the component's pixel count and its mask (H, W) bool."""

    x0: int
    y0: int
    x1: int
    y1: int
    pixels: int
    mask: np.ndarray


def boxes_from_cam(
    cam: np.ndarray,
    threshold: float = 0.2,
    rule: str = "largest",
    standard: str = "max",
    percentile: float = 98.0,
) -> list[CamBox]:
    """Boxes of one map at one threshold with the ``exact`` convention, with each component's mask.

    ``largest`` returns at most one box, ``all`` one per component in raster order; an empty binary map
    (e.g. an all-zero CAM) returns no box.
    """
    _check("box rule", rule, RULES)
    values, cuts = binarization(cam, [threshold], standard, percentile, "exact")
    mask = values > cuts[0]
    labels, count = ndimage.label(mask, structure=_EIGHT)
    if count == 0:
        return []
    pixels = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    keep = [int(np.argmax(pixels)) + 1] if rule == "largest" else list(range(1, count + 1))
    slices = ndimage.find_objects(labels)
    out = []
    for k in keep:
        rows, cols = slices[k - 1]
        out.append(CamBox(cols.start, rows.start, cols.stop, rows.stop, int(pixels[k - 1]), labels == k))
    return out
