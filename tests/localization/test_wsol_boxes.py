"""Boxes from CAMs: synthetic blobs, the wsolevaluation conventions, and OpenCV as a peer where installed."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from scarce.errors import ConfigError
from scarce.localization.boxes import box_iou, boxes_from_cam, gt_boxes_for, threshold_boxes


def blob_map(shape=(20, 30), blobs=()):
    """A map that is ``value`` on each rectangle ``(x0, y0, x1, y1, value)`` (exclusive corners), 0 elsewhere."""
    cam = np.zeros(shape)
    for x0, y0, x1, y1, value in blobs:
        cam[y0:y1, x0:x1] = np.maximum(cam[y0:y1, x0:x1], value)
    return cam


def boxes_at(tb, j, rule="all"):
    boxes, which = tb.select(rule)
    return boxes[which == j].tolist()


def test_one_blob_gives_its_tight_box_and_mask():
    cam = blob_map(blobs=[(5, 3, 12, 9, 1.0)])
    (box,) = boxes_from_cam(cam, threshold=0.2)
    assert (box.x0, box.y0, box.x1, box.y1, box.pixels) == (5, 3, 12, 9, 42)
    assert box.mask.sum() == 42 and box.mask[3:9, 5:12].all()


def test_two_blobs_largest_and_all_rules():
    cam = blob_map(blobs=[(1, 1, 4, 4, 0.5), (10, 5, 20, 12, 1.0)])
    (largest,) = boxes_from_cam(cam, 0.2, rule="largest")
    assert (largest.x0, largest.y0, largest.x1, largest.y1) == (10, 5, 20, 12)
    every = boxes_from_cam(cam, 0.2, rule="all")
    assert [(b.x0, b.y0, b.x1, b.y1) for b in every] == [(1, 1, 4, 4), (10, 5, 20, 12)]  # raster order
    # above half the maximum only the strong blob remains (the rule is strict: 0.5 > 0.5 is false)
    assert [(b.x0, b.y0) for b in boxes_from_cam(cam, 0.5, rule="all")] == [(10, 5)]


def test_diagonal_neighbours_are_one_component():
    cam = np.zeros((5, 5))
    cam[1, 1] = cam[2, 2] = cam[3, 3] = 1.0
    assert [(b.x0, b.y0, b.x1, b.y1) for b in boxes_from_cam(cam, 0.5, rule="all")] == [(1, 1, 4, 4)]


def test_empty_cam_exact_has_no_box_and_wsolevaluation_gives_the_origin_pixel():
    cam = np.zeros((6, 7))
    assert boxes_from_cam(cam, 0.2) == []
    exact = threshold_boxes(cam, [0.0, 0.5], convention="exact")
    assert exact.boxes.shape == (0, 4)
    ref = threshold_boxes(cam, [0.0, 0.5], convention="wsolevaluation")
    assert ref.boxes.tolist() == [[0, 0, 1, 1], [0, 0, 1, 1]] and ref.largest.all()


def test_percentile_standard_ignores_a_hot_pixel():
    cam = blob_map(shape=(10, 10), blobs=[(2, 2, 8, 8, 0.3)])
    cam[0, 9] = 1.0  # one extreme pixel
    # MaS at 0.5: only the hot pixel exceeds 0.5 · 1.0
    assert [(b.x0, b.y0, b.x1, b.y1) for b in boxes_from_cam(cam, 0.5)] == [(9, 0, 10, 1)]
    # PaS: the 98th percentile is 0.3 (36 % of the map), so 0.5 · 0.3 keeps the blob
    assert np.percentile(cam, 98) == pytest.approx(0.3)
    assert [(b.x0, b.y0, b.x1, b.y1) for b in boxes_from_cam(cam, 0.5, standard="percentile")] == [(2, 2, 8, 8)]


def test_largest_tie_goes_first_in_exact_and_last_in_wsolevaluation():
    cam = blob_map(shape=(8, 12), blobs=[(1, 1, 3, 3, 1.0), (7, 4, 9, 6, 1.0)])
    exact = threshold_boxes(cam, [0.5], convention="exact")
    assert exact.boxes[exact.largest].tolist() == [[1, 1, 3, 3]]
    ref = threshold_boxes(cam, [0.5], convention="wsolevaluation")
    assert ref.boxes[ref.largest].tolist() == [[7, 4, 10, 7]]  # (x, y, x+w, y+h) read inclusive


def test_wsolevaluation_unimodal_case():
    """The reference's own test: boxes (x0, y0, x1, y1) with x1/y1 inclusive; ours are those + 1."""
    scoremap = np.array([[0.0, 0.0, 0.0, 0.0, 0.0],
                         [0.0, 0.4, 0.4, 0.4, 0.6],
                         [0.0, 0.4, 1.0, 0.8, 0.6],
                         [0.0, 0.4, 0.4, 0.4, 0.6]])
    tb = threshold_boxes(scoremap, np.arange(0, 1, 0.2), convention="wsolevaluation")
    expected = [[1, 1, 4, 3], [1, 1, 4, 3], [2, 1, 4, 3], [2, 2, 4, 3], [2, 2, 3, 3]]
    assert tb.select("largest")[0].tolist() == [[x0, y0, x1 + 1, y1 + 1] for x0, y0, x1, y1 in expected]


def test_wsolevaluation_multimodal_case():
    """Largest by contour area, not pixels: at 0.2 a 3-pixel L (area ½) beats a 5-pixel chain (area 0);
    at 0.6 two single pixels tie and OpenCV's reverse order picks the later one."""
    scoremap = np.array([[0.4, 0.0, 0.2, 0.2, 0.2],
                         [0.4, 0.4, 0.0, 0.4, 0.0],
                         [0.0, 0.0, 0.0, 0.4, 0.0],
                         [1.0, 0.6, 0.8, 0.2, 0.2]])
    tb = threshold_boxes(scoremap, np.arange(0, 1, 0.2), convention="wsolevaluation")
    expected = [[0, 0, 4, 3], [0, 0, 2, 2], [0, 3, 3, 3], [2, 3, 3, 3], [0, 3, 1, 3]]
    assert tb.select("largest")[0].tolist() == [[x0, y0, x1 + 1, y1 + 1] for x0, y0, x1, y1 in expected]
    # the exact convention ranks by pixels: the 5-pixel chain (x 0..3, y 1..3) wins at 0.2
    exact = threshold_boxes(scoremap, [0.2], convention="exact")
    assert exact.boxes[exact.largest].tolist() == [[0, 1, 4, 4]]


def test_contour_area_counts_holes_and_holes_are_contours():
    ring = np.zeros((12, 20))
    ring[1:8, 1:8] = 1.0
    ring[2:7, 2:7] = 0.0  # 24-pixel ring enclosing a 5x5 hole: outer contour area 6·6 = 36
    ring[2:7, 11:16] = 1.0  # solid 25-pixel square: contour area 4·4 = 16
    ref = threshold_boxes(ring, [0.5], convention="wsolevaluation")
    assert ref.boxes[ref.largest].tolist() == [[1, 1, 9, 9]]  # the ring (box one pixel wider, as the reference)
    # multi-contour: ring, square, and the hole's own contour (the hole's box grown by one pixel)
    assert sorted(ref.boxes.tolist()) == sorted([[1, 1, 9, 9], [11, 2, 17, 8], [1, 1, 9, 9]])
    exact = threshold_boxes(ring, [0.5], convention="exact")
    assert exact.boxes[exact.largest].tolist() == [[11, 2, 16, 7]]  # more pixels
    assert len(exact.boxes) == 2


def test_wsolevaluation_box_is_clipped_like_the_reference():
    cam = blob_map(shape=(10, 10), blobs=[(6, 0, 10, 10, 1.0)])
    ref = threshold_boxes(cam, [0.5], convention="wsolevaluation")
    # x + w = 10 is clipped to W - 1 = 9 (inclusive), i.e. 10 exclusive: the clip cancels the extra pixel
    assert ref.boxes.tolist() == [[6, 0, 10, 10]]


def test_thresholds_in_any_order_and_shared_masks():
    rng = np.random.default_rng(1)
    cam = ndimage.gaussian_filter(rng.random((24, 24)), 2)
    cam /= cam.max()
    grid = np.array([0.7, 0.1, 0.4, 0.4000001, 0.95])
    for convention in ("exact", "wsolevaluation"):
        together = threshold_boxes(cam, grid, convention=convention)
        for j, t in enumerate(grid):
            alone = threshold_boxes(cam, [t], convention=convention)
            assert sorted(boxes_at(together, j)) == sorted(alone.boxes.tolist())
            assert boxes_at(together, j, "largest") == alone.select("largest")[0].tolist()


def test_euler_shortcut_agrees_with_skimage():
    from skimage.measure import euler_number

    from scarce.localization.boxes import _Levels

    rng = np.random.default_rng(2)
    for _ in range(20):
        levels = rng.integers(0, 6, size=(9, 11))
        state = _Levels(levels.astype(float), np.arange(5) + 0.5, windows=True)
        for j in range(5):
            assert state.euler[j] == euler_number(levels > j + 0.5, connectivity=2)


def test_iou_and_gt_conventions():
    # wsolevaluation's realistic case: inclusive (1,2,5,6) vs (3,1,4,5) → 8/27
    a = gt_boxes_for([(1, 2, 5, 6)], "wsolevaluation")
    b = gt_boxes_for([(3, 1, 4, 5)], "wsolevaluation")
    assert box_iou(a, b)[0, 0] == pytest.approx(8 / 27)
    assert box_iou([(0, 0, 2, 2)], [(1, 1, 3, 3), (5, 5, 5, 9)]).tolist() == [[1 / 7, 0.0]]


def test_bad_inputs():
    with pytest.raises(ValueError, match="2-D"):
        threshold_boxes(np.zeros((2, 2, 2)), [0.5])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        threshold_boxes(np.full((3, 3), 2.0), [0.5], convention="wsolevaluation")
    with pytest.raises(ValueError, match="NaN"):
        boxes_from_cam(np.full((3, 3), np.nan))
    with pytest.raises(ConfigError, match="box rule"):
        boxes_from_cam(np.ones((3, 3)), rule="biggest")


def test_matches_opencv_on_random_maps():
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(0)
    grid = np.arange(0, 1, 0.05)
    for trial in range(40):
        height, width = rng.integers(4, 40, size=2)
        raw = ndimage.gaussian_filter(rng.random((height, width)), rng.uniform(0.3, 2.5))
        if trial % 4 == 0:
            raw = raw * (raw > np.median(raw))
        scoremap = (raw - raw.min()) / (raw.max() - raw.min())
        ours = threshold_boxes(scoremap, grid, convention="wsolevaluation")
        image = (scoremap * 255).astype(np.uint8)
        for j, t in enumerate(grid):
            _, binary = cv2.threshold(image, int(t * image.max()), 255, cv2.THRESH_BINARY)
            contours = cv2.findContours(binary, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[0]

            def rect(c):
                x, y, w, h = cv2.boundingRect(c)
                return [x, y, min(x + w, width - 1) + 1, min(y + h, height - 1) + 1]

            expected_all = sorted(rect(c) for c in contours) or [[0, 0, 1, 1]]
            expected_largest = [rect(max(contours, key=cv2.contourArea))] if contours else [[0, 0, 1, 1]]
            assert sorted(boxes_at(ours, j)) == expected_all
            assert boxes_at(ours, j, "largest") == expected_largest
