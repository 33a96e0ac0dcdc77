"""ErrorDistanceProfile: FP distances and miss depths against a hand calculation and a brute-force oracle."""

from __future__ import annotations

import numpy as np
import pytest

from scarce.metrics.extent import ErrorDistanceProfile


def brute_force_profile(pred: np.ndarray, gt: np.ndarray, edges: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """Oracle: every error pixel's distance by an explicit minimum over all pixels of the other kind."""
    rows, cols = np.indices(gt.shape)
    coords = np.stack([rows.ravel(), cols.ravel()], axis=1).astype(float)
    flat_gt, flat_pred = gt.ravel(), pred.ravel()

    def nearest(pixel: np.ndarray, targets: np.ndarray) -> float:
        return float(np.sqrt(((coords[targets] - pixel) ** 2).sum(axis=1)).min())

    fp, fn = np.zeros(len(edges) + 1, dtype=int), np.zeros(len(edges) + 1, dtype=int)
    for index in range(flat_gt.size):
        if flat_pred[index] == 0 or flat_gt[index] == 0 or flat_gt[index] == 255:
            if flat_gt[index] == 0 and flat_pred[index] != 0:  # false positive: to the nearest non-background
                fp[sum(nearest(coords[index], flat_gt != 0) > e for e in edges)] += 1
            elif flat_gt[index] not in (0, 255):  # miss: to the nearest pixel of another label
                fn[sum(nearest(coords[index], flat_gt != flat_gt[index]) > e for e in edges)] += 1
    return fp, fn


def test_hand_computed_row() -> None:
    # One object at columns 3..8 of a 1x12 row; predicted at columns 1..5 and 11.
    gt = np.zeros((1, 12), dtype=np.uint8)
    gt[0, 3:9] = 2
    pred = np.zeros((1, 12), dtype=np.uint8)
    pred[0, 1:6] = 2
    pred[0, 11] = 2
    profile = ErrorDistanceProfile(edges=(1, 2))
    profile.update(pred, gt)
    out = profile.compute()
    # FP at columns 1, 2 (distances 2, 1) and 11 (distance 3 to column 8).
    assert out["fp_counts"] == [1, 1, 1]
    # Misses at columns 6, 7, 8: depths to the background at column 9 are 3, 2, 1.
    assert out["fn_counts"] == [1, 1, 1]
    assert out["fp_far"] == pytest.approx(1 / 3) and out["fn_deep"] == pytest.approx(1 / 3)
    assert out["bins"] == ["<=1", "<=2", ">2"]


def test_matches_brute_force_on_random_maps() -> None:
    rng = np.random.default_rng(0)
    edges = [1.0, 2.5, 4.0]
    profile = ErrorDistanceProfile(edges)
    expected_fp, expected_fn = np.zeros(4, dtype=int), np.zeros(4, dtype=int)
    for _ in range(6):
        gt = np.zeros((14, 17), dtype=np.uint8)
        for _ in range(2):
            top, left = rng.integers(0, 9), rng.integers(0, 11)
            gt[top : top + rng.integers(4, 9), left : left + rng.integers(4, 10)] = rng.integers(1, 4)
        gt[rng.random(gt.shape) < 0.03] = 255
        pred = np.where(rng.random(gt.shape) < 0.3, rng.integers(0, 4, gt.shape), np.where(gt == 255, 0, gt))
        profile.update(pred.astype(np.uint8), gt)
        fp, fn = brute_force_profile(pred, gt, edges)
        expected_fp += fp
        expected_fn += fn
    out = profile.compute()
    assert out["fp_counts"] == expected_fp.tolist() and sum(out["fp_counts"]) > 20
    assert out["fn_counts"] == expected_fn.tolist() and sum(out["fn_counts"]) > 10


def test_confusions_and_ignored_pixels_are_not_counted_and_depth_is_to_the_own_boundary() -> None:
    gt = np.array([[1, 1, 1, 255, 2], [1, 1, 1, 2, 2]], dtype=np.uint8)
    pred = np.array([[2, 0, 0, 0, 2], [0, 1, 0, 2, 2]], dtype=np.uint8)  # (0,0) is a confusion, (0,3) ignored
    profile = ErrorDistanceProfile(edges=(1,))
    profile.update(pred, gt)
    out = profile.compute()
    # misses (0,1), (1,0): depth 2 and 3 (to the band at (0,3), class 2 at (1,3)); (0,2), (1,2): depth 1
    assert out["fn_counts"] == [2, 2]
    assert out["fp_counts"] == [0, 0] and out["fp_shares"] == [None, None] and out["fp_far"] is None
    whole = ErrorDistanceProfile(edges=(1,))
    whole.update(np.zeros((2, 2), dtype=np.uint8), np.ones((2, 2), dtype=np.uint8))
    assert whole.compute()["fn_counts"] == [0, 4]  # a class covering the image has no boundary: all deep
    empty = ErrorDistanceProfile(edges=(1,))
    empty.update(np.array([[0, 3, 3]], dtype=np.uint8), np.zeros((1, 3), dtype=np.uint8))
    assert empty.compute()["fp_counts"] == [0, 2]  # no object in the image: every false positive is far


def test_merge_equals_one_pass_and_validates() -> None:
    rng = np.random.default_rng(1)
    maps = [(rng.integers(0, 3, (8, 8)), rng.integers(0, 3, (8, 8))) for _ in range(4)]
    whole, first, second = ErrorDistanceProfile(), ErrorDistanceProfile(), ErrorDistanceProfile()
    for index, (pred, gt) in enumerate(maps):
        whole.update(pred, gt)
        (first if index % 2 else second).update(pred, gt)
    first.merge(second)
    assert first.compute() == whole.compute()
    with pytest.raises(ValueError, match="edges"):
        first.merge(ErrorDistanceProfile(edges=(2, 4)))
    with pytest.raises(ValueError, match="increasing"):
        ErrorDistanceProfile(edges=(4, 4))
    with pytest.raises(ValueError, match="shape"):
        whole.update(np.zeros((2, 3)), np.zeros((3, 2)))


def test_profile_of_a_mask_folder_names_a_missing_or_mismatched_mask(tmp_path) -> None:
    from scarce.data import ScenesConfig, generate_scenes, load_voc
    from scarce.data.base import save_label_png
    from scarce.errors import DataError
    from scarce.io import read_label_png
    from scarce.methods.compare import error_profile

    generate_scenes(ScenesConfig(n=10, image_size=32, scale_range=(0.4, 0.6), subset=True), tmp_path / "data",
                    progress=False)
    masks = tmp_path / "masks"
    samples = load_voc(tmp_path / "data", "test", allow_empty=True).samples
    for sample in samples:  # predicting the ground truth itself: no error of either kind
        gt = read_label_png(tmp_path / "data" / "SegmentationClass" / f"{sample.stem}.png")
        save_label_png(masks / f"{sample.stem}.png", np.where(gt == 255, 0, gt).astype(np.uint8))
    test_set = load_voc(tmp_path / "data", "test", allow_empty=True)
    out = error_profile(masks, test_set)
    assert sum(out["fp_counts"]) == 0 and sum(out["fn_counts"]) == 0
    bad = masks / f"{samples[0].stem}.png"
    save_label_png(bad, np.zeros((8, 8), dtype=np.uint8))
    with pytest.raises(DataError, match=f"{samples[0].stem}.png.*shape"):
        error_profile(masks, test_set)
    bad.unlink()
    with pytest.raises(DataError, match=f"{samples[0].stem}.png: label file not found"):
        error_profile(masks, test_set)

