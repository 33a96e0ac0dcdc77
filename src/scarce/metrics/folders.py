"""Score a folder of predicted label PNGs against a folder of ground-truth label PNGs."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from scarce.errors import DataError
from scarce.io import PathLike, read_label_png
from scarce.metrics.segmentation import SegmentationEvaluator, scores_from_confusion

_UINT8_LABELS = 256


def _png_files(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        raise DataError(folder, "folder not found")
    return {path.stem: path for path in sorted(folder.glob("*.png"))}


def _unmatched(stems: set[str], files: dict[str, Path], other: Path, what: str) -> None:
    """Fail on the first unmatched file, naming it and counting the others so one fix is not followed by ten."""
    if stems:
        ordered = sorted(stems)
        more = f" (and {len(ordered) - 1} more)" if len(ordered) > 1 else ""
        raise DataError(files[ordered[0]], f"no {what} with the same name in {other}{more}")


def _max_label(labels: np.ndarray, ignore_index: int) -> int:
    labelled = labels[labels != ignore_index]
    return int(labelled.max()) if labelled.size else -1


def evaluate_folders(
    pred_dir: PathLike, gt_dir: PathLike, num_classes: int | None = None, ignore_index: int = 255
) -> dict[str, object]:
    """Scores of every ``*.png`` in ``pred_dir`` against the ``*.png`` of the same stem in ``gt_dir``.

    Files may be VOC palette PNGs or plain 8-bit index PNGs (only the indices are read). The two folders
    must hold the same stems and each pair the same size, otherwise :class:`DataError` names the file.
    When ``num_classes`` is None it is inferred as the largest label found in either folder, ``ignore_index``
    excepted, plus one; a class that appears in no file at all is therefore missing from the per-class
    lists, so pass ``num_classes`` to report a fixed class list.

    Returns the :func:`~scarce.metrics.segmentation.scores_from_confusion` dict plus ``num_images`` and
    ``num_classes``.
    """
    pred_dir, gt_dir = Path(pred_dir), Path(gt_dir)
    preds, gts = _png_files(pred_dir), _png_files(gt_dir)
    if not gts:
        raise DataError(gt_dir, "no .png label maps in this folder")
    _unmatched(set(gts) - set(preds), gts, pred_dir, "prediction")
    _unmatched(set(preds) - set(gts), preds, gt_dir, "ground truth")

    # Inferring the class count needs every file, so accumulate over all 8-bit labels and crop at the end.
    evaluator = SegmentationEvaluator(_UINT8_LABELS if num_classes is None else num_classes, ignore_index)
    max_label = -1
    for stem, gt_path in gts.items():
        pred_path = preds[stem]
        gt, pred = read_label_png(gt_path), read_label_png(pred_path)
        if pred.shape != gt.shape:
            raise DataError(pred_path, f"size {pred.shape[1]}x{pred.shape[0]} differs from the ground truth "
                                       f"{gt_path} ({gt.shape[1]}x{gt.shape[0]})")
        try:
            evaluator.update(pred, gt)
        except ValueError as exc:
            raise DataError(pred_path, f"against {gt_path}: {exc}") from None
        max_label = max(max_label, _max_label(pred, ignore_index), _max_label(gt, ignore_index))

    if num_classes is None:
        num_classes = max(max_label + 1, 1)
    scores = scores_from_confusion(evaluator.confusion[:num_classes, :num_classes])
    return {**scores, "num_images": len(gts), "num_classes": num_classes}
