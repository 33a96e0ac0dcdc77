"""Streaming segmentation scores: a confusion-matrix evaluator and a background-threshold sweep.

Both follow the ``update(...)`` / ``compute()`` style of wsolevaluation, so a loop over images never holds
more than one label map, and both ``merge`` so that shards evaluated by separate processes combine exactly.

Confusion matrices are ``int64`` (n, n) with rows = ground truth and columns = prediction (the
``sklearn.metrics.confusion_matrix`` convention), where n counts the background (C + 1).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from scarce.pseudo.masks import top_class


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """Elementwise ``numerator / denominator`` with NaN where the denominator is 0 (undefined, not zero)."""
    out = np.full(np.broadcast(numerator, denominator).shape, np.nan)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def _nanmean(values: np.ndarray) -> np.ndarray:
    """Mean over the last axis skipping NaN; NaN (without numpy's warning) when every entry is NaN."""
    defined = ~np.isnan(values)
    count = defined.sum(axis=-1)
    total = np.where(defined, values, 0.0).sum(axis=-1)
    return _ratio(total, count)


def _iou(confusion: np.ndarray) -> np.ndarray:
    """Per-class IoU of one (n, n) or a stack (..., n, n) of confusion matrices."""
    true_pos = np.diagonal(confusion, axis1=-2, axis2=-1)
    union = confusion.sum(axis=-1) + confusion.sum(axis=-2) - true_pos
    return _ratio(true_pos, union)


def scores_from_confusion(confusion: np.ndarray) -> dict[str, object]:
    """All scores of one (n, n) confusion matrix (rows = gt, columns = prediction).

    Keys: ``miou``, ``iou`` (per class), ``fp`` / ``fn`` (means) with ``fp_per_class`` / ``fn_per_class``,
    ``precision`` / ``recall`` (means) with ``precision_per_class`` / ``recall_per_class``,
    ``pixel_accuracy``, ``num_pixels`` and ``confusion`` (list of lists).

    FP_c and FN_c are divided by the union TP_c + FP_c + FN_c, as Puzzle-CAM and RecurSeed report them, so
    that IoU_c + FP_c + FN_c = 1 and the two error terms say where the missing IoU went. A class absent
    from both prediction and ground truth has an empty union: its IoU, FP and FN are NaN and it is left out
    of the means (chainercv's ``calc_semantic_segmentation_iou`` takes the same nanmean). Likewise
    precision is NaN for a class never predicted and recall NaN for a class never in the ground truth.
    Every value is a plain Python float, so the dict goes straight to JSON (:func:`scarce.io.write_json` writes
    NaN as ``null``).
    """
    confusion = np.asarray(confusion, dtype=np.int64)
    if confusion.ndim != 2 or confusion.shape[0] != confusion.shape[1]:
        raise ValueError(f"confusion matrix must be square, got shape {confusion.shape}")
    true_pos = np.diagonal(confusion)
    gt_count = confusion.sum(axis=1)
    pred_count = confusion.sum(axis=0)
    union = gt_count + pred_count - true_pos
    iou = _ratio(true_pos, union)
    fp = _ratio(pred_count - true_pos, union)
    fn = _ratio(gt_count - true_pos, union)
    precision = _ratio(true_pos, pred_count)
    recall = _ratio(true_pos, gt_count)
    total = confusion.sum()
    return {
        "miou": float(_nanmean(iou)),
        "iou": iou.tolist(),
        "fp": float(_nanmean(fp)),
        "fp_per_class": fp.tolist(),
        "fn": float(_nanmean(fn)),
        "fn_per_class": fn.tolist(),
        "precision": float(_nanmean(precision)),
        "precision_per_class": precision.tolist(),
        "recall": float(_nanmean(recall)),
        "recall_per_class": recall.tolist(),
        "pixel_accuracy": float(_ratio(true_pos.sum(), total)),
        "num_pixels": int(total),
        "confusion": confusion.tolist(),
    }


def _valid_pixels(
    gt: np.ndarray, pred: np.ndarray, num_classes: int, ignore_index: int
) -> tuple[np.ndarray, np.ndarray]:
    """Flattened ``int64`` gt and prediction at the pixels that count, after checking their label ranges.

    An out-of-range label would otherwise land silently in another cell of the flattened bincount.
    """
    gt = np.asarray(gt).reshape(-1)
    valid = gt != ignore_index
    gt = gt[valid].astype(np.int64)
    pred = np.asarray(pred).reshape(-1)[valid].astype(np.int64)
    if gt.size == 0:
        return gt, pred
    if gt.min() < 0 or gt.max() >= num_classes:
        raise ValueError(
            f"ground-truth labels must lie in [0, {num_classes}) or be {ignore_index}, found {gt.min()}..{gt.max()}"
        )
    if pred.min() < 0 or pred.max() >= num_classes:
        raise ValueError(
            f"predicted labels must lie in [0, {num_classes}) where the ground truth is not {ignore_index}, "
            f"found {pred.min()}..{pred.max()}"
        )
    if 0 <= ignore_index < num_classes and (pred == ignore_index).any():
        raise ValueError(f"prediction uses the ignore label {ignore_index} where the ground truth is labelled")
    return gt, pred


def _check_same_shape(pred_shape: tuple[int, ...], gt_shape: tuple[int, ...]) -> None:
    if pred_shape != gt_shape:
        raise ValueError(f"prediction shape {pred_shape} differs from ground-truth shape {gt_shape}")


class SegmentationEvaluator:
    """Accumulates one confusion matrix over many (prediction, ground truth) label maps.

    ``num_classes`` counts the background (C + 1). Ground-truth pixels equal to ``ignore_index`` are
    skipped; every other pixel must carry labels in [0, num_classes) in both maps. See
    :func:`scores_from_confusion` for what ``compute`` returns, including NaN for absent classes.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self._confusion = np.zeros((num_classes, num_classes), dtype=np.int64)

    @property
    def confusion(self) -> np.ndarray:
        """A copy of the accumulated (n, n) matrix, rows = gt, columns = prediction."""
        return self._confusion.copy()

    def update(self, pred: np.ndarray, gt: np.ndarray) -> None:
        """Add one label map pair (numpy arrays or CPU tensors of the same shape)."""
        pred, gt = np.asarray(pred), np.asarray(gt)
        _check_same_shape(pred.shape, gt.shape)
        gt_flat, pred_flat = _valid_pixels(gt, pred, self.num_classes, self.ignore_index)
        n = self.num_classes
        self._confusion += np.bincount(gt_flat * n + pred_flat, minlength=n * n).reshape(n, n)

    def merge(self, other: SegmentationEvaluator) -> None:
        """Add the counts of an evaluator that saw another shard of the data."""
        if (other.num_classes, other.ignore_index) != (self.num_classes, self.ignore_index):
            raise ValueError(
                f"cannot merge an evaluator with num_classes={other.num_classes}, ignore_index={other.ignore_index} "
                f"into one with num_classes={self.num_classes}, ignore_index={self.ignore_index}"
            )
        self._confusion += other._confusion

    def compute(self) -> dict[str, object]:
        return scores_from_confusion(self._confusion)


class ThresholdSweep:
    """mIoU of CAM seeds for a whole grid of background thresholds, in one pass over the data.

    Each threshold t applies the IRN rule of :func:`scarce.pseudo.masks.cams_to_labels`. Since the
    prediction at a pixel is its best class if that class's score is above t and background otherwise,
    a pixel is fully described by (gt, best class, how many grid thresholds lie strictly below its score).
    ``update`` computes the per-pixel max/argmax once and does a single ``np.bincount`` over that triple;
    the per-threshold confusion matrices follow from a cumulative sum over the rank axis. The cost is one
    pass over the pixels whatever the grid size, and the result equals running one
    :class:`SegmentationEvaluator` per threshold exactly.

    Thresholds are kept and reported in increasing order. Note that picking the threshold on the
    evaluation ground truth (``best_threshold``) is the leak the literature commits; report it as an
    upper bound or choose the threshold on a held-out split.
    """

    def __init__(self, num_classes: int, thresholds: Sequence[float], ignore_index: int = 255) -> None:
        grid = np.sort(np.asarray(thresholds, dtype=np.float64).reshape(-1))
        if grid.size == 0:
            raise ValueError("the threshold grid is empty")
        if not np.isfinite(grid).all():
            raise ValueError(f"thresholds must be finite, got {list(thresholds)}")
        if (np.diff(grid) == 0).any():
            raise ValueError(f"thresholds must be distinct, got {list(thresholds)}")
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.thresholds = grid
        # counts[r, g, c]: pixels with gt g, best class label c and exactly r grid thresholds below their score
        self._counts = np.zeros((grid.size + 1, num_classes, num_classes), dtype=np.int64)

    def update(self, cams: np.ndarray, keys: Sequence[int] | np.ndarray, gt: np.ndarray) -> None:
        """Add one image: CAMs (K, H, W) of its positive classes ``keys`` and its gt label map (H, W)."""
        score, labels = top_class(cams, keys)
        gt = np.asarray(gt)
        _check_same_shape(score.shape, gt.shape)
        gt_flat, label_flat = _valid_pixels(gt, labels, self.num_classes, self.ignore_index)
        score_flat = score.reshape(-1)[gt.reshape(-1) != self.ignore_index]
        # compare in the CAM's dtype, exactly as cams_to_labels does
        rank = np.searchsorted(self.thresholds.astype(score.dtype), score_flat, side="left").astype(np.int64)
        n = self.num_classes
        flat_index = (rank * n + gt_flat) * n + label_flat
        self._counts += np.bincount(flat_index, minlength=self._counts.size).reshape(self._counts.shape)

    def merge(self, other: ThresholdSweep) -> None:
        """Add the counts of a sweep over another shard of the data (same classes and grid)."""
        same = (other.num_classes, other.ignore_index) == (self.num_classes, self.ignore_index)
        if not same or not np.array_equal(other.thresholds, self.thresholds):
            raise ValueError("cannot merge threshold sweeps with different classes, ignore index or threshold grid")
        self._counts += other._counts

    def confusions(self) -> np.ndarray:
        """``int64`` (T, n, n): the confusion matrix at every threshold of the grid."""
        at_or_above = self._counts[::-1].cumsum(axis=0)[::-1]  # [r] = pixels with rank >= r
        foreground = at_or_above[1:]  # [j] = pixels predicted as their best class at threshold j
        pixels_per_gt = at_or_above[0].sum(axis=1)
        confusion = foreground.copy()
        confusion[:, :, 0] += pixels_per_gt[None, :] - foreground.sum(axis=2)
        return confusion

    def compute(self) -> dict[str, object]:
        """The mIoU curve and its peak; ties go to the lowest threshold, an empty sweep has no best threshold."""
        miou = _nanmean(_iou(self.confusions()))
        best_threshold: float | None = None
        best_miou = float("nan")
        if not np.isnan(miou).all():
            best = int(np.nanargmax(miou))
            best_threshold, best_miou = float(self.thresholds[best]), float(miou[best])
        return {
            "thresholds": self.thresholds.tolist(),
            "miou": miou.tolist(),
            "best_threshold": best_threshold,
            "best_miou": best_miou,
        }

    def evaluator_at(self, threshold: float) -> dict[str, object]:
        """Full :class:`SegmentationEvaluator` scores at one threshold of the grid (matched within 1e-9)."""
        matches = np.flatnonzero(np.abs(self.thresholds - threshold) <= 1e-9)
        if matches.size == 0:
            raise ValueError(f"threshold {threshold} is not in the grid {self.thresholds.tolist()}")
        return scores_from_confusion(self.confusions()[matches[0]])
