"""WSOL metrics against hand-computed cases, the wsolevaluation conventions and scikit-learn's AP."""

from __future__ import annotations

import numpy as np
import pytest

from scarce.errors import ConfigError
from scarce.localization.evaluate import WsolMetricsConfig
from scarce.localization.metrics import (
    BoxAccuracy,
    PixelPrecisionRecall,
    WsolEvaluator,
    cam_threshold_grid,
    protocol_scores,
    wsolevaluation_box,
    wsolevaluation_mask,
    wsolevaluation_scoremap,
)


def square(shape, x0, y0, x1, y1, value=1.0, cam=None):
    cam = np.zeros(shape) if cam is None else cam
    cam[y0:y1, x0:x1] = value
    return cam


def test_grid_is_the_references_arange():
    assert np.array_equal(cam_threshold_grid(0.25), [0.0, 0.25, 0.5, 0.75])
    with pytest.raises(ValueError):
        cam_threshold_grid(0)


def test_box_accuracy_v1_hand_case_with_best_and_chosen_thresholds():
    # map A: a strong core (x 4..8) inside a weak halo (x 2..10); GT = the core → right only above 0.5
    a = square((12, 12), 2, 2, 10, 10, 0.4)
    a = square((12, 12), 4, 4, 8, 8, 1.0, a)
    gt_a = [(4, 4, 8, 8)]
    # map B: the same map, GT = the halo → right only at thresholds below 0.4
    gt_b = [(2, 2, 10, 10)]
    acc = BoxAccuracy([0.0, 0.3, 0.5, 0.7], convention="exact")
    acc.update(a, gt_a, class_correct=True)
    acc.update(a, gt_b, class_correct=False)
    assert acc.curves().tolist() == [[0.5, 0.5, 0.5, 0.5]]
    # IoU(core, halo) = 16/64 = 0.25 < 0.5: each map is right on one side of 0.4 only
    assert acc.correct.tolist() == [[1, 1, 1, 1]]
    assert acc.compute()["accuracy"] == 0.5 and acc.best_thresholds() == [0.0]  # ties: lowest threshold
    at = acc.compute([0.5])
    assert at["thresholds"] == [0.5] and at["top1_loc"] == 0.5  # A (class right) is right at 0.5
    assert acc.compute([0.0])["top1_loc"] == 0.0  # at 0 only B is right, and its class is wrong
    with pytest.raises(ValueError, match="grid"):
        acc.compute([0.42])


def test_v2_is_multi_contour_and_mean_over_iou_thresholds():
    cam = square((20, 20), 1, 1, 11, 11, 1.0)  # big blob 10x10
    cam = square((20, 20), 14, 14, 18, 18, 1.0, cam)  # small blob 4x4
    gt = [(14, 14, 18, 20)]  # the small object: IoU with the small blob's box = 16/24 ≈ 0.667
    v1 = BoxAccuracy([0.5], (0.5,), rule="largest", convention="exact")
    v2 = BoxAccuracy([0.5], (0.3, 0.5, 0.7), rule="all", convention="exact")
    v1.update(cam, gt)
    v2.update(cam, gt)
    assert v1.compute()["accuracy"] == 0.0  # the largest component is the wrong one
    result = v2.compute()
    assert result["per_iou"] == {0.3: 1.0, 0.5: 1.0, 0.7: 0.0}
    assert result["accuracy"] == pytest.approx(2 / 3)


def test_any_ground_truth_box_counts():
    cam = square((10, 10), 5, 5, 9, 9)
    acc = BoxAccuracy([0.5], convention="exact")
    acc.update(cam, [(0, 0, 2, 2), (5, 5, 9, 9)])
    assert acc.compute()["accuracy"] == 1.0


def test_box_conventions_differ_by_one_pixel_on_each_far_side():
    # a 2x2 component at x, y in {1, 2} and a 3x3 ground-truth box (1, 1, 4, 4) (exclusive):
    # exact: tight box 2x2 vs 3x3 → IoU 4/9 ≈ 0.444; wsolevaluation: (x, y, x+w, y+h) read inclusively is
    # 3x3, the metadata box read inclusively is 4x4 → IoU 9/16 = 0.5625. Only the latter passes IoU 0.5.
    cam = square((8, 8), 1, 1, 3, 3)
    expected = {"exact": [1.0, 0.0, 0.0, 0.0, 0.0], "wsolevaluation": [1.0, 1.0, 1.0, 1.0, 0.0]}
    for convention, hits in expected.items():
        acc = BoxAccuracy([0.5], (0.44, 0.45, 0.5, 0.56, 0.57), convention=convention)
        acc.update(cam, [(1, 1, 4, 4)])
        assert acc.compute()["per_iou"] == dict(zip((0.44, 0.45, 0.5, 0.56, 0.57), hits)), convention


def test_wsolevaluation_scoremap_is_resized_to_224_and_min_max_normalised():
    # already 224 x 224: the resize is the identity and only normalize_scoremap acts, (v − 0.2) / (0.9 − 0.2)
    cam = np.full((224, 224), 0.5)
    cam[0, 0], cam[10, 20] = 0.2, 0.9
    out = wsolevaluation_scoremap(cam)
    assert out[0, 0] == 0.0 and out[10, 20] == 1.0 and out[5, 5] == pytest.approx(0.3 / 0.7, abs=1e-6)
    assert wsolevaluation_scoremap(np.ones((7, 7))).shape == (224, 224)
    assert not wsolevaluation_scoremap(np.full((5, 5), 0.3)).any()  # constant → zeros (normalize_scoremap)
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(0)
    raw = rng.random((30, 41)).astype(np.float32)
    reference = cv2.resize(raw, (224, 224), interpolation=cv2.INTER_CUBIC)
    reference = (reference - reference.min()) / (reference - reference.min()).max()
    assert np.abs(wsolevaluation_scoremap(raw) - reference).max() < 1e-4


def test_wsolevaluation_boxes_and_masks_follow_its_resize():
    # resize_bbox: (10, 20, 99, 150) in a 100 x 200 (w x h) image → int(x · 224/100), int(y · 224/200)
    assert wsolevaluation_box((10, 20, 99, 150), (100, 200)) == (22, 22, 221, 168)
    mask = np.arange(12).reshape(3, 4)
    resized = wsolevaluation_mask(mask)
    assert resized.shape == (224, 224)
    assert resized[0, 0] == 0 and resized[74, 55] == 0 and resized[75, 56] == 5 and resized[223, 223] == 11
    cv2 = pytest.importorskip("cv2")
    labels = np.random.default_rng(1).integers(0, 5, size=(37, 53)).astype(np.uint8)
    assert np.array_equal(wsolevaluation_mask(labels), cv2.resize(labels, (224, 224), interpolation=cv2.INTER_NEAREST))
    with pytest.raises(ConfigError, match="scoremap"):
        WsolMetricsConfig(scoremap="cv2")


def test_pxap_hand_case_and_sklearn():
    # fg scores 0.9, 0.4; bg scores 0.6, 0.1 (all on the 0.1 grid):
    # ≥0.9: P=1, R=.5 · ≥0.6: P=.5, R=.5 · ≥0.4: P=2/3, R=1 → AP = .5·1 + .5·2/3
    scoremap = np.array([[0.9, 0.4], [0.6, 0.1]])
    fg = np.array([[True, True], [False, False]])
    px = PixelPrecisionRecall(np.arange(0, 1, 0.1).round(10))
    px.update(scoremap, fg)
    assert px.pxap() == pytest.approx(0.5 + 0.5 * 2 / 3)
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 100, size=(30, 40)) / 100.0  # on the grid, so bins are exact
    truth = rng.random((30, 40)) < scores
    px = PixelPrecisionRecall(np.arange(0, 1, 0.01).round(10))
    px.update(scores, truth)
    assert px.pxap() == pytest.approx(sklearn_metrics.average_precision_score(truth.ravel(), scores.ravel()))


def test_pxap_conventions_of_the_reference():
    fg = np.zeros((10, 10), bool)
    fg[:3] = True
    for value in (0.0, 0.5, 1.0):  # a constant map scores the foreground fraction
        px = PixelPrecisionRecall()
        px.update(np.full((10, 10), value), fg)
        assert px.pxap() == pytest.approx(0.3)
    perfect = PixelPrecisionRecall()
    perfect.update(fg.astype(float), fg)
    assert perfect.pxap() == 1.0
    assert np.isnan(PixelPrecisionRecall().pxap())


def test_peak_iou_and_ignore_pixels():
    scoremap = np.array([[0.8, 0.6, 0.3, 0.1]])
    fg = np.array([[True, True, False, False]])
    ignore = np.array([[False, False, True, False]])
    px = PixelPrecisionRecall([0.0, 0.2, 0.5, 0.7])
    px.update(scoremap, fg, ignore)
    # ignoring the 0.3 pixel: ≥0: 2/(2+1) · ≥.2: 2/2 · ≥.5: 2/2 · ≥.7: 1/2
    assert px.iou_curve().tolist() == pytest.approx([2 / 3, 1.0, 1.0, 0.5])
    assert px.compute() == {"pxap": 1.0, "iou": 1.0, "threshold": 0.2, "pixels": 3}
    assert px.compute(0.7)["iou"] == 0.5


def test_merge_equals_one_pass_and_refuses_other_settings():
    rng = np.random.default_rng(3)
    maps = [rng.random((12, 12)) for _ in range(4)]
    gts = [[(2, 2, 8, 9)], [(0, 0, 5, 5)], [(6, 6, 12, 12)], [(1, 3, 11, 10)]]
    masks = [m > 0.6 for m in maps]
    whole, a, b = WsolEvaluator(0.1), WsolEvaluator(0.1), WsolEvaluator(0.1)
    for k, (m, g, f) in enumerate(zip(maps, gts, masks)):
        whole.update(m, g, f, class_correct=k % 2 == 0)
        (a if k < 2 else b).update(m, g, f, class_correct=k % 2 == 0)
    a.merge(b)
    assert a.compute() == whole.compute()
    with pytest.raises(ValueError):
        a.v1.merge(BoxAccuracy(cam_threshold_grid(0.1), rule="all"))


def test_protocol_scores_use_held_out_thresholds_and_label_the_oracle():
    halo = square((12, 12), 2, 2, 10, 10, 0.4)
    cam = square((12, 12), 4, 4, 8, 8, 1.0, halo)
    val, test = WsolEvaluator(0.1, convention="exact"), WsolEvaluator(0.1, convention="exact")
    val.update(cam, [(2, 2, 10, 10)])  # val prefers a low threshold (< 0.4)
    test.update(cam, [(4, 4, 8, 8)])  # test needs a high one (≥ 0.4)
    scores = protocol_scores(val, test)
    assert scores["thresholds"]["MaxBoxAccV1"] == [0.0]
    assert scores["test"]["MaxBoxAccV1"] == 0.0
    assert scores["oracle"]["MaxBoxAccV1"] == 1.0
    assert "oracle" in scores["protocol"] and "val" in scores["protocol"]
    masks_only = WsolEvaluator(0.1)
    masks_only.update(cam, None, cam > 0.5)
    with pytest.raises(ValueError, match="no MaxBoxAccV1 threshold"):
        protocol_scores(masks_only, test)
