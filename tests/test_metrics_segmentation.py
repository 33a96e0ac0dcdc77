import math

import numpy as np
import pytest
from sklearn.metrics import confusion_matrix

from scarce.metrics import SegmentationEvaluator, ThresholdSweep, scores_from_confusion


def irn_labels(cams: np.ndarray, keys: np.ndarray, threshold: float) -> np.ndarray:
    """Independent oracle: IRN's literal rule, a constant plane in the CAM dtype prepended, then argmax."""
    plane = np.full((1, *cams.shape[1:]), threshold, dtype=cams.dtype)
    padded_keys = np.concatenate([[0], np.asarray(keys, dtype=np.int64) + 1])
    return padded_keys[np.concatenate([plane, cams]).argmax(axis=0)]


# 3x3 example: gt rows/pred rows; the bottom-right gt pixel is ignored.
GT = np.array([[0, 0, 1], [1, 1, 2], [2, 2, 255]], dtype=np.uint8)
PRED = np.array([[0, 1, 1], [1, 2, 2], [2, 2, 0]], dtype=np.uint8)


def test_hand_calculated_scores_on_3x3():
    evaluator = SegmentationEvaluator(3)
    evaluator.update(PRED, GT)
    scores = evaluator.compute()
    # confusion rows = gt: TP (1, 2, 3), FP (0, 1, 1), FN (1, 1, 0), union (2, 4, 4)
    assert scores["confusion"] == [[1, 1, 0], [0, 2, 1], [0, 0, 3]]
    assert scores["iou"] == pytest.approx([1 / 2, 1 / 2, 3 / 4])
    assert scores["miou"] == pytest.approx(7 / 12)
    assert scores["fp_per_class"] == pytest.approx([0, 1 / 4, 1 / 4])
    assert scores["fn_per_class"] == pytest.approx([1 / 2, 1 / 4, 0])
    assert scores["fp"] == pytest.approx(1 / 6)
    assert scores["fn"] == pytest.approx(1 / 4)
    assert scores["precision_per_class"] == pytest.approx([1, 2 / 3, 3 / 4])
    assert scores["recall_per_class"] == pytest.approx([1 / 2, 2 / 3, 1])
    assert scores["precision"] == pytest.approx(29 / 36)
    assert scores["recall"] == pytest.approx(13 / 18)
    assert scores["pixel_accuracy"] == pytest.approx(6 / 8)
    assert scores["num_pixels"] == 8


def test_class_absent_from_pred_and_gt_is_nan_and_excluded():
    evaluator = SegmentationEvaluator(5)
    evaluator.update(PRED, GT)
    scores = evaluator.compute()
    assert all(math.isnan(scores[key][4]) for key in ("iou", "fp_per_class", "fn_per_class"))
    assert scores["miou"] == pytest.approx(7 / 12)
    assert scores["fp"] == pytest.approx(1 / 6)


def test_class_in_gt_but_never_predicted_counts_as_zero_iou():
    evaluator = SegmentationEvaluator(3)
    evaluator.update(np.zeros((1, 2), np.uint8), np.array([[0, 2]], np.uint8))
    scores = evaluator.compute()
    assert scores["iou"][2] == 0.0 and math.isnan(scores["iou"][1])
    assert scores["miou"] == pytest.approx(0.25)  # (1/2 + 0) / 2
    assert math.isnan(scores["precision_per_class"][2]) and scores["recall_per_class"][2] == 0.0


def test_empty_evaluator_gives_nan_without_warnings():
    with np.errstate(all="raise"):
        scores = SegmentationEvaluator(3).compute()
    assert math.isnan(scores["miou"]) and math.isnan(scores["pixel_accuracy"]) and scores["num_pixels"] == 0


def test_confusion_equals_sklearn_on_random_maps_with_ignore():
    rng = np.random.default_rng(0)
    evaluator = SegmentationEvaluator(6)
    all_gt, all_pred = [], []
    for shape in [(7, 9), (4, 4), (11, 3)]:
        gt = rng.integers(0, 6, shape).astype(np.uint8)
        gt[rng.random(shape) < 0.2] = 255
        pred = rng.integers(0, 6, shape).astype(np.uint8)
        evaluator.update(pred, gt)
        all_gt.append(gt.ravel())
        all_pred.append(pred.ravel())
    gt, pred = np.concatenate(all_gt), np.concatenate(all_pred)
    keep = gt != 255
    expected = confusion_matrix(gt[keep], pred[keep], labels=list(range(6)))
    np.testing.assert_array_equal(evaluator.confusion, expected)
    assert evaluator.confusion.dtype == np.int64


def test_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(3, 2\)"):
        SegmentationEvaluator(3).update(np.zeros((2, 3)), np.zeros((3, 2)))


@pytest.mark.parametrize(
    "pred, gt, message",
    [
        ([[0, 3]], [[0, 1]], "predicted labels"),
        ([[0, 1]], [[0, 7]], "ground-truth labels"),
    ],
)
def test_out_of_range_labels_raise(pred, gt, message):
    with pytest.raises(ValueError, match=message):
        SegmentationEvaluator(3).update(np.array(pred), np.array(gt))


def test_out_of_range_prediction_on_ignored_pixel_is_not_scored():
    evaluator = SegmentationEvaluator(3)
    evaluator.update(np.array([[0, 9]]), np.array([[0, 255]]))
    assert evaluator.compute()["num_pixels"] == 1


def test_merge_equals_single_pass_and_rejects_other_shapes():
    whole, left, right = SegmentationEvaluator(3), SegmentationEvaluator(3), SegmentationEvaluator(3)
    whole.update(PRED, GT)
    whole.update(GT.clip(0, 2), GT)
    left.update(PRED, GT)
    right.update(GT.clip(0, 2), GT)
    left.merge(right)
    np.testing.assert_array_equal(left.confusion, whole.confusion)
    with pytest.raises(ValueError, match="num_classes=4"):
        left.merge(SegmentationEvaluator(4))


def test_scores_from_confusion_rejects_non_square():
    with pytest.raises(ValueError, match="square"):
        scores_from_confusion(np.zeros((2, 3)))


def random_images(rng: np.random.Generator, num_classes: int):
    """CAMs on a 0.05 grid (so scores hit thresholds exactly), varied K including K = 0, gt with ignore."""
    images = []
    for num_keys, shape in [(2, (6, 5)), (0, (3, 4)), (1, (5, 5)), (3, (4, 7))]:
        keys = rng.choice(num_classes - 1, size=num_keys, replace=False)
        cams = (rng.integers(0, 21, (num_keys, *shape)) / 20).astype(np.float32)
        gt = rng.integers(0, num_classes, shape).astype(np.uint8)
        gt[rng.random(shape) < 0.15] = 255
        images.append((cams, keys, gt))
    return images


def test_sweep_equals_naive_per_threshold_loop_exactly():
    rng = np.random.default_rng(1)
    thresholds = [round(t, 2) for t in np.arange(0.0, 1.0001, 0.05)][::-1]  # given unsorted on purpose
    images = random_images(rng, 6)
    sweep = ThresholdSweep(6, thresholds)
    for cams, keys, gt in images:
        sweep.update(cams, keys, gt)
    result = sweep.compute()
    assert result["thresholds"] == sorted(thresholds)
    confusions = sweep.confusions()
    for index, threshold in enumerate(sorted(thresholds)):
        naive = SegmentationEvaluator(6)
        for cams, keys, gt in images:
            naive.update(irn_labels(cams, keys, threshold), gt)
        np.testing.assert_array_equal(confusions[index], naive.confusion)
        expected = naive.compute()
        assert result["miou"][index] == expected["miou"]
        at = sweep.evaluator_at(threshold)
        assert at["confusion"] == expected["confusion"]
        np.testing.assert_array_equal(at["iou"], expected["iou"])
    assert result["best_miou"] == max(result["miou"])
    assert result["best_threshold"] == result["thresholds"][result["miou"].index(max(result["miou"]))]


def test_sweep_background_wins_ties_in_cam_dtype():
    # pixel 0: both classes 0.3 (first plane wins, key 2 -> 3); pixel 1: 0.5 -> 3; pixel 2: 0.7 -> key 0 -> 1
    cams = np.array([[[0.3, 0.5, 0.2]], [[0.3, 0.4, 0.7]]], dtype=np.float32)
    gt = np.array([[3, 3, 1]], dtype=np.uint8)
    sweep = ThresholdSweep(4, [0.29, 0.3, 0.5])
    sweep.update(cams, [2, 0], gt)
    confusions = sweep.confusions()
    # t = 0.29: all correct; t = 0.3: pixel 0 -> background; t = 0.5: pixels 0 and 1 -> background
    assert confusions[0][3].tolist() == [0, 0, 0, 2] and confusions[0][1].tolist() == [0, 1, 0, 0]
    assert confusions[1][3].tolist() == [1, 0, 0, 1]
    assert confusions[2][3].tolist() == [2, 0, 0, 0] and confusions[2][1].tolist() == [0, 1, 0, 0]
    assert sweep.compute()["best_threshold"] == 0.29


def test_sweep_image_without_classes_predicts_background():
    sweep = ThresholdSweep(3, [0.0, 0.5])
    sweep.update(np.zeros((0, 2, 2), np.float32), [], np.array([[0, 1], [255, 0]], np.uint8))
    np.testing.assert_array_equal(sweep.confusions(), [[[2, 0, 0], [1, 0, 0], [0, 0, 0]]] * 2)


def test_sweep_merge_and_empty_and_grid_errors():
    rng = np.random.default_rng(2)
    images = random_images(rng, 5)
    whole, left, right = (ThresholdSweep(5, [0.1, 0.2, 0.4]) for _ in range(3))
    for index, (cams, keys, gt) in enumerate(images):
        whole.update(cams, keys, gt)
        (left if index % 2 else right).update(cams, keys, gt)
    left.merge(right)
    np.testing.assert_array_equal(left.confusions(), whole.confusions())
    with pytest.raises(ValueError, match="threshold grid"):
        left.merge(ThresholdSweep(5, [0.1, 0.2]))
    empty = ThresholdSweep(5, [0.1]).compute()
    assert empty["best_threshold"] is None and math.isnan(empty["best_miou"])
    with pytest.raises(ValueError, match="not in the grid"):
        whole.evaluator_at(0.3)
    assert whole.evaluator_at(0.1 + 1e-12)["confusion"] == whole.confusions()[0].tolist()
    with pytest.raises(ValueError, match="distinct"):
        ThresholdSweep(5, [0.1, 0.1])
    with pytest.raises(ValueError, match="empty"):
        ThresholdSweep(5, [])


def test_sweep_checks_shapes_and_key_range():
    sweep = ThresholdSweep(3, [0.1])
    with pytest.raises(ValueError, match=r"\(2, 2\).*\(2, 3\)"):
        sweep.update(np.ones((1, 2, 2), np.float32), [0], np.zeros((2, 3), np.uint8))
    with pytest.raises(ValueError, match="predicted labels"):
        sweep.update(np.ones((1, 2, 2), np.float32), [4], np.zeros((2, 2), np.uint8))
