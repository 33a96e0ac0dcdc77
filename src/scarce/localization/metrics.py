"""WSOL metrics as streaming evaluators: MaxBoxAcc (V1, V2), top-1 localization, PxAP and Peak IoU.

Every evaluator follows wsolevaluation's ``update`` (one score map at a time) / ``compute`` style, holds
only per-threshold counters (never the maps), and ``merge``\\ s with one that saw another shard.

The protocol (Choe et al., CVPR'20): thresholds are *chosen* on a held-out split with localization labels
(``best_thresholds`` of the evaluator that saw it) and the score is *reported* on the test split at those
thresholds (``compute(thresholds=...)``). The maximum over thresholds on the test split itself is an
oracle figure (wsolevaluation's "MaxBoxAcc" as printed); :func:`protocol_scores` returns both, labelled.

All scores are fractions in [0, 1] (wsolevaluation prints percentages).

- **MaxBoxAccV1**: one box per map (largest component), correct when its IoU with *any* ground-truth
  box is ≥ 0.5; accuracy per score-map threshold, best threshold.
- **MaxBoxAccV2**: boxes of all components ("multi-contour"): correct when any box reaches IoU δ with any
  ground-truth box; accuracy per threshold and δ ∈ {0.3, 0.5, 0.7}, best threshold per δ, mean over δ.
- **Top-1 localization**: the class is right *and* the V1 box is (IoU ≥ 0.5), at the chosen threshold.
- **PxAP**: pixel average precision: histograms of the scores at ground-truth foreground and background
  pixels (O(#bins) memory), precision/recall from their cumulative sums from the top bin down, and
  AP = Σ precision·Δrecall (wsolevaluation's ``MaskEvaluator``: bins ``[τ_k, τ_k+1)`` of the score-map
  thresholds plus ``[1, 2)`` and ``[2, 3]``; a pixel is predicted foreground at τ when its score ≥ τ).
- **Peak IoU**: ``max_τ IoU(τ)``, ``IoU(τ) = TP(τ) / (TP(τ) + FP(τ) + FN(τ))`` with TP(τ) the ground-truth
  foreground pixels scoring ≥ τ, FP(τ) the background pixels scoring ≥ τ and FN(τ) the foreground pixels
  scoring < τ, each counted over the whole split (pooled pixels, not a mean of per-image IoUs), ignore
  pixels left out, τ on the same grid; from the same histograms as PxAP. The peak is the test split's best
  τ (an oracle); under the protocol τ is chosen on the held-out split. Not in wsolevaluation (Bae et al.'s
  LID'20 table reports it).

Maps are scored as given (scarce stores them at the image's own size, max-normalised); the score maps of
wsolevaluation are first resized to 224×224 and min-max normalised: :func:`wsolevaluation_scoremap`,
:func:`wsolevaluation_box` and :func:`wsolevaluation_mask` do that (``scoremap: wsolevaluation`` in
:class:`scarce.localization.evaluate.WsolMetricsConfig`).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from scarce.localization.boxes import (
    CONVENTIONS,
    ThresholdBoxes,
    box_iou,
    check_scoremap,
    gt_boxes_for,
    threshold_boxes,
)

WSOLEVALUATION_SIZE = 224  # wsolevaluation's _RESIZE_LENGTH


def wsolevaluation_scoremap(cam: np.ndarray, size: int = WSOLEVALUATION_SIZE) -> np.ndarray:
    """A map as wsolevaluation scores it: resized to size×size, then its ``normalize_scoremap``.

    The resize is bicubic with ``cv2.INTER_CUBIC``'s kernel (a = −0.75, half-pixel centres, replicated
    border), computed with torch; min-max normalisation to [0, 1], all zeros for a constant or NaN map.
    Departure: a map left constant up to the float32 rounding of the resize (range ≤ 1e-6 of its magnitude)
    counts as constant; the reference compares min == max after ``cv2.resize``, which is off by an ulp on a
    constant map, and so stretches that rounding noise over [0, 1].
    """
    cam = np.asarray(cam, dtype=np.float32)
    if cam.ndim != 2:
        raise ValueError(f"a score map must be 2-D, got shape {cam.shape}")
    resized = F.interpolate(torch.from_numpy(cam)[None, None], size=(size, size), mode="bicubic",
                            align_corners=False)[0, 0].double().numpy()
    if np.isnan(resized).any() or np.ptp(resized) <= 1e-6 * max(1.0, float(np.abs(resized).max())):
        return np.zeros_like(resized)
    resized -= resized.min()
    return resized / resized.max()


def wsolevaluation_box(box: Sequence[float], image_size: tuple[int, int],
                       size: int = WSOLEVALUATION_SIZE) -> tuple[int, int, int, int]:
    """wsolevaluation's ``resize_bbox``: each corner scaled from ``image_size`` (width, height) and truncated."""
    width, height = image_size
    x0, y0, x1, y1 = (float(v) for v in box)
    return int(x0 * size / width), int(y0 * size / height), int(x1 * size / width), int(y1 * size / height)


def wsolevaluation_mask(mask: np.ndarray, size: int = WSOLEVALUATION_SIZE) -> np.ndarray:
    """``cv2.resize(mask, (size, size), INTER_NEAREST)``: output pixel i reads source pixel floor(i · H / size)."""
    mask = np.asarray(mask)
    rows = np.floor(np.arange(size) * mask.shape[0] / size).astype(np.int64)
    cols = np.floor(np.arange(size) * mask.shape[1] / size).astype(np.int64)
    return mask[rows][:, cols]


DEFAULT_INTERVAL = 0.01  # wsolevaluation's evaluation CLI; its training config uses 0.001
V1_IOU = (0.5,)
V2_IOU = (0.3, 0.5, 0.7)


def cam_threshold_grid(interval: float = DEFAULT_INTERVAL) -> np.ndarray:
    """``[0, interval, 2·interval, …] < 1``, the reference's ``np.arange(0, 1, interval)``."""
    if not 0 < interval < 1:
        raise ValueError(f"cam curve interval must lie in (0, 1), got {interval}")
    return np.arange(0, 1, interval)


def _pick(curve: np.ndarray) -> int:
    """Index of the best value; ties go to the lowest threshold (``np.argmax``)."""
    return int(np.argmax(curve))


def _index_of(grid: np.ndarray, threshold: float) -> int:
    matches = np.flatnonzero(np.abs(grid - threshold) <= 1e-9)
    if matches.size == 0:
        raise ValueError(f"threshold {threshold} is not on the evaluator's grid")
    return int(matches[0])


class BoxAccuracy:
    """Box accuracy at every (IoU threshold, score-map threshold) pair, streamed over score maps.

    ``rule="largest"`` with IoU (0.5,) is MaxBoxAccV1, ``rule="all"`` with (0.3, 0.5, 0.7) is MaxBoxAccV2.
    When ``update`` is told whether the image's class was predicted right, top-1 localization accuracy
    (class right and box IoU ≥ ``top1_iou`` under this evaluator's rule) is counted too.
    """

    def __init__(
        self,
        cam_thresholds: Sequence[float] | np.ndarray | None = None,
        iou_thresholds: Sequence[float] = V1_IOU,
        rule: str = "largest",
        convention: str = "wsolevaluation",
        standard: str = "max",
        percentile: float = 98.0,
        top1_iou: float = 0.5,
    ) -> None:
        self.cam_thresholds = cam_threshold_grid() if cam_thresholds is None else np.asarray(cam_thresholds, np.float64)
        self.iou_thresholds = tuple(float(t) for t in iou_thresholds)
        if not self.iou_thresholds or not all(0 < t <= 1 for t in self.iou_thresholds):
            raise ValueError(f"IoU thresholds must lie in (0, 1], got {iou_thresholds}")
        if convention not in CONVENTIONS:
            raise ValueError(f"unknown box convention {convention!r}; choose from {', '.join(CONVENTIONS)}")
        self.rule, self.convention, self.standard, self.percentile = rule, convention, standard, percentile
        self.top1_iou = top1_iou
        self.correct = np.zeros((len(self.iou_thresholds), len(self.cam_thresholds)), dtype=np.int64)
        self.top1_correct = np.zeros(len(self.cam_thresholds), dtype=np.int64)
        self.count = 0
        self.top1_count = 0

    def candidates(self, scoremap: np.ndarray) -> ThresholdBoxes:
        """The candidate boxes of one map on this evaluator's grid (shareable between V1 and V2)."""
        return threshold_boxes(scoremap, self.cam_thresholds, self.standard, self.percentile, self.convention)

    def update(self, scoremap: np.ndarray, gt_boxes: Sequence[Sequence[float]] | np.ndarray,
               class_correct: bool | None = None, candidates: ThresholdBoxes | None = None) -> None:
        """Add one map with its ground-truth boxes ``(x0, y0, x1, y1)``, exclusive (scarce's ``Box``).

        ``candidates`` may be passed when already computed with the same grid, standard and convention.
        """
        if candidates is None:
            candidates = self.candidates(scoremap)
        elif candidates.num_thresholds != len(self.cam_thresholds):
            raise ValueError("candidate boxes were computed on another threshold grid")
        gt = gt_boxes_for(gt_boxes, self.convention)
        if len(gt) == 0:
            raise ValueError("a map needs at least one ground-truth box to be scored")
        boxes, which = candidates.select(self.rule)
        best = np.zeros(len(self.cam_thresholds))
        if len(boxes):
            np.maximum.at(best, which, box_iou(boxes, gt).max(axis=1))
        hits = best[None, :] >= np.asarray(self.iou_thresholds)[:, None]
        self.correct += hits
        self.count += 1
        if class_correct is not None:
            self.top1_count += 1
            if class_correct:
                self.top1_correct += best >= self.top1_iou

    def merge(self, other: BoxAccuracy) -> None:
        same = (other.iou_thresholds, other.rule, other.convention, other.standard, other.percentile) == (
            self.iou_thresholds, self.rule, self.convention, self.standard, self.percentile)
        if not same or not np.array_equal(other.cam_thresholds, self.cam_thresholds):
            raise ValueError("cannot merge box evaluators with different settings")
        self.correct += other.correct
        self.top1_correct += other.top1_correct
        self.count += other.count
        self.top1_count += other.top1_count

    def curves(self) -> np.ndarray:
        """(n_iou, n_thresholds) accuracy; NaN before any update."""
        return self.correct / self.count if self.count else np.full(self.correct.shape, np.nan)

    def best_thresholds(self) -> list[float]:
        """The score-map threshold with the best accuracy, per IoU threshold (what a held-out split chooses)."""
        return [float(self.cam_thresholds[_pick(curve)]) for curve in self.curves()]

    def compute(self, thresholds: Sequence[float] | None = None) -> dict[str, object]:
        """Accuracy at ``thresholds`` (one per IoU threshold, e.g. chosen on another split), or at the best.

        Keys: ``accuracy`` (mean over IoU thresholds), ``per_iou`` {IoU: accuracy}, ``thresholds`` used,
        and ``top1_loc`` at the threshold of the IoU equal to ``top1_iou`` (or the first) when counted.
        """
        curves = self.curves()
        chosen = self.best_thresholds() if thresholds is None else [float(t) for t in thresholds]
        if len(chosen) != len(self.iou_thresholds):
            raise ValueError(f"need {len(self.iou_thresholds)} thresholds (one per IoU threshold), got {len(chosen)}")
        index = [_index_of(self.cam_thresholds, t) for t in chosen]
        per_iou = {iou: float(curves[k, i]) for k, (iou, i) in enumerate(zip(self.iou_thresholds, index))}
        result: dict[str, object] = {
            "accuracy": float(np.mean(list(per_iou.values()))) if self.count else float("nan"),
            "per_iou": per_iou,
            "thresholds": chosen,
            "count": self.count,
        }
        if self.top1_count:
            anchor = self.iou_thresholds.index(self.top1_iou) if self.top1_iou in self.iou_thresholds else 0
            result["top1_loc"] = float(self.top1_correct[index[anchor]] / self.top1_count)
        return result


class PixelPrecisionRecall:
    """PxAP and the IoU curve (Peak IoU) from score histograms at ground-truth fg and bg pixels."""

    def __init__(self, cam_thresholds: Sequence[float] | np.ndarray | None = None) -> None:
        self.cam_thresholds = cam_threshold_grid() if cam_thresholds is None else np.asarray(cam_thresholds, np.float64)
        if np.any(np.diff(self.cam_thresholds) <= 0) or self.cam_thresholds[0] < 0 or self.cam_thresholds[-1] >= 1:
            raise ValueError("pixel thresholds must increase within [0, 1)")
        self.edges = np.append(self.cam_thresholds, [1.0, 2.0, 3.0])
        self.fg_hist = np.zeros(len(self.edges) - 1, dtype=np.int64)
        self.bg_hist = np.zeros(len(self.edges) - 1, dtype=np.int64)

    def update(self, scoremap: np.ndarray, foreground: np.ndarray, ignore: np.ndarray | None = None) -> None:
        """Add one map in [0, 1] with its boolean foreground mask; ``ignore`` pixels count as neither."""
        scoremap = check_scoremap(scoremap, unit_range=True)
        foreground = np.asarray(foreground, dtype=bool)
        if foreground.shape != scoremap.shape:
            raise ValueError(f"mask shape {foreground.shape} differs from score map shape {scoremap.shape}")
        valid = np.ones_like(foreground) if ignore is None else ~np.asarray(ignore, dtype=bool)
        self.fg_hist += np.histogram(scoremap[foreground & valid], bins=self.edges)[0]
        self.bg_hist += np.histogram(scoremap[~foreground & valid], bins=self.edges)[0]

    def merge(self, other: PixelPrecisionRecall) -> None:
        if not np.array_equal(other.edges, self.edges):
            raise ValueError("cannot merge pixel evaluators with different threshold grids")
        self.fg_hist += other.fg_hist
        self.bg_hist += other.bg_hist

    def _cumulative(self) -> tuple[np.ndarray, np.ndarray]:
        """TP and FP when predicting "score ≥ edge", for edges from the top (3, 2, 1, τ_last … τ_0)."""
        return self.fg_hist[::-1].cumsum(), self.bg_hist[::-1].cumsum()

    def pxap(self) -> float:
        """Area under the precision-recall curve, Σ precision·Δrecall; NaN without foreground pixels."""
        tp, fp = self._cumulative()
        positives = self.fg_hist.sum()
        if positives == 0:
            return float("nan")
        predicted = tp + fp
        precision = np.divide(tp, predicted, out=np.zeros(len(tp)), where=predicted > 0)
        recall = tp / positives
        # steps where nothing is predicted have Δrecall = 0, so leaving them out (as the reference) changes nothing
        return float(np.sum(precision[1:] * np.diff(recall)))

    def iou_curve(self) -> np.ndarray:
        """Foreground IoU when predicting "score ≥ τ", for each grid threshold τ (increasing)."""
        tp, fp = self._cumulative()
        tp, fp = tp[::-1][: len(self.cam_thresholds)], fp[::-1][: len(self.cam_thresholds)]
        union = self.fg_hist.sum() + fp
        return np.divide(tp, union, out=np.full(len(tp), np.nan), where=union > 0)

    def best_threshold(self) -> float:
        curve = self.iou_curve()
        return float(self.cam_thresholds[_pick(np.nan_to_num(curve, nan=-1.0))])

    def compute(self, threshold: float | None = None) -> dict[str, object]:
        """``pxap`` (threshold-free) and ``iou`` at ``threshold`` (chosen elsewhere) or at the peak."""
        chosen = self.best_threshold() if threshold is None else float(threshold)
        curve = self.iou_curve()
        return {"pxap": self.pxap(), "iou": float(curve[_index_of(self.cam_thresholds, chosen)]),
                "threshold": chosen, "pixels": int(self.fg_hist.sum() + self.bg_hist.sum())}


class WsolEvaluator:
    """MaxBoxAccV1, MaxBoxAccV2 (+ top-1 loc) and PxAP / Peak IoU of one split, from one pass over its maps.

    V1 and V2 share the candidate boxes of each map (components are labelled once per threshold).
    """

    def __init__(self, interval: float = DEFAULT_INTERVAL, iou_thresholds: Sequence[float] = V2_IOU,
                 convention: str = "wsolevaluation", standard: str = "max", percentile: float = 98.0) -> None:
        grid = cam_threshold_grid(interval)
        self.v1 = BoxAccuracy(grid, V1_IOU, "largest", convention, standard, percentile)
        self.v2 = BoxAccuracy(grid, iou_thresholds, "all", convention, standard, percentile)
        self.pixels = PixelPrecisionRecall(grid)

    def update(self, scoremap: np.ndarray, gt_boxes: Sequence[Sequence[float]] | np.ndarray | None = None,
               foreground: np.ndarray | None = None, ignore: np.ndarray | None = None,
               class_correct: bool | None = None) -> None:
        """One map of one class: its boxes of that class and/or its foreground mask (``ignore`` optional)."""
        if gt_boxes is not None and len(gt_boxes):
            candidates = self.v1.candidates(scoremap)
            self.v1.update(scoremap, gt_boxes, class_correct, candidates)
            self.v2.update(scoremap, gt_boxes, None, candidates)
        if foreground is not None:
            self.pixels.update(scoremap, foreground, ignore)

    def merge(self, other: WsolEvaluator) -> None:
        self.v1.merge(other.v1)
        self.v2.merge(other.v2)
        self.pixels.merge(other.pixels)

    def best_thresholds(self) -> dict[str, object]:
        """What this split chooses (use on a held-out split): thresholds for V1, V2 (per IoU) and IoU."""
        return {
            "MaxBoxAccV1": self.v1.best_thresholds() if self.v1.count else None,
            "MaxBoxAccV2": self.v2.best_thresholds() if self.v2.count else None,
            "PeakIoU": self.pixels.best_threshold() if self.pixels.fg_hist.sum() else None,
        }

    def compute(self, thresholds: dict[str, object] | None = None) -> dict[str, float]:
        """Scores at ``thresholds`` (from :meth:`best_thresholds` of another split) or at this split's best."""
        def chosen(key: str) -> object:
            if thresholds is None:
                return None
            if thresholds.get(key) is None:
                raise ValueError(f"no {key} threshold was chosen on the held-out split (it has no such ground truth)")
            return thresholds[key]

        scores: dict[str, float] = {}
        if self.v1.count:
            v1 = self.v1.compute(chosen("MaxBoxAccV1"))  # type: ignore[arg-type]
            scores["MaxBoxAccV1"] = v1["accuracy"]  # type: ignore[assignment]
            if "top1_loc" in v1:
                scores["Top1Loc"] = v1["top1_loc"]  # type: ignore[assignment]
        if self.v2.count:
            v2 = self.v2.compute(chosen("MaxBoxAccV2"))  # type: ignore[arg-type]
            scores["MaxBoxAccV2"] = v2["accuracy"]  # type: ignore[assignment]
            for iou, value in v2["per_iou"].items():  # type: ignore[union-attr]
                scores[f"BoxAcc@{iou:g}"] = value
        if self.pixels.fg_hist.sum():
            pixels = self.pixels.compute(chosen("PeakIoU"))  # type: ignore[arg-type]
            scores["PxAP"] = pixels["pxap"]  # type: ignore[assignment]
            scores["PeakIoU"] = pixels["iou"]  # type: ignore[assignment]
        return scores


PROTOCOL = ("score-map thresholds chosen on the held-out split ({held_out}), scores reported on {test} at those "
            "thresholds; 'oracle' = best threshold on {test} itself (an upper bound, not a result)")


def protocol_scores(held_out: WsolEvaluator, test: WsolEvaluator, held_out_name: str = "val",
                    test_name: str = "test") -> dict[str, object]:
    """The protocol's figures: test scores at the held-out split's thresholds, plus the labelled oracle."""
    chosen = held_out.best_thresholds()
    return {
        "protocol": PROTOCOL.format(held_out=held_out_name, test=test_name),
        "thresholds": chosen,
        "test": test.compute(chosen),
        "oracle": test.compute(),
    }
