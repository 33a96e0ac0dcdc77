import math

import numpy as np
import pytest

from scarce.errors import DataError
from scarce.metrics import SegmentationEvaluator, evaluate_folders
from scarce.pseudo import save_label_png

RNG = np.random.default_rng(0)
GTS = {f"img{i}": RNG.integers(0, 4, (5, 6)).astype(np.uint8) for i in range(3)}
GTS["img0"][0, :3] = 255
# predictions copy the gt 70% of the time, so they carry 255 where the gt is ignored (allowed: not scored)
PREDS = {
    stem: np.where(RNG.random(gt.shape) < 0.7, gt, RNG.integers(0, 4, gt.shape)).astype(np.uint8)
    for stem, gt in GTS.items()
}


def write_folders(root, preds=PREDS, gts=GTS, pred_palette=True):
    for stem, labels in gts.items():
        save_label_png(root / "gt" / f"{stem}.png", labels)
    for stem, labels in preds.items():
        save_label_png(root / "pred" / f"{stem}.png", labels, palette=pred_palette)
    return root / "pred", root / "gt"


def test_scores_equal_the_evaluator_over_the_same_maps(tmp_path):
    pred_dir, gt_dir = write_folders(tmp_path)
    (pred_dir / "notes.txt").write_text("not a label map")
    result = evaluate_folders(pred_dir, gt_dir)
    evaluator = SegmentationEvaluator(4)
    for stem in GTS:
        evaluator.update(PREDS[stem], GTS[stem])
    expected = evaluator.compute()
    assert result["num_images"] == 3 and result["num_classes"] == 4
    assert result["confusion"] == expected["confusion"]
    assert result["miou"] == expected["miou"]


def test_palette_and_plain_index_pngs_score_the_same(tmp_path):
    palette_result = evaluate_folders(*write_folders(tmp_path / "palette"))
    plain_result = evaluate_folders(*write_folders(tmp_path / "plain", pred_palette=False))
    assert plain_result["confusion"] == palette_result["confusion"]
    assert plain_result["miou"] == palette_result["miou"]


def test_explicit_num_classes_reports_absent_classes_as_nan(tmp_path):
    result = evaluate_folders(*write_folders(tmp_path), num_classes=6)
    assert len(result["iou"]) == 6 and math.isnan(result["iou"][5])
    assert result["miou"] == evaluate_folders(*write_folders(tmp_path))["miou"]


def test_missing_prediction_names_the_gt_file(tmp_path):
    preds = {stem: labels for stem, labels in PREDS.items() if stem != "img1"}
    pred_dir, gt_dir = write_folders(tmp_path, preds=preds)
    with pytest.raises(DataError, match=r"img1\.png: no prediction") as info:
        evaluate_folders(pred_dir, gt_dir)
    assert info.value.path == gt_dir / "img1.png"


def test_extra_prediction_names_the_prediction_file(tmp_path):
    preds = {**PREDS, "stray": PREDS["img0"]}
    pred_dir, gt_dir = write_folders(tmp_path, preds=preds)
    with pytest.raises(DataError, match="no ground truth") as info:
        evaluate_folders(pred_dir, gt_dir)
    assert info.value.path == pred_dir / "stray.png"


def test_size_mismatch_names_the_prediction_file(tmp_path):
    preds = {**PREDS, "img2": PREDS["img2"][:, :5]}
    pred_dir, gt_dir = write_folders(tmp_path, preds=preds)
    with pytest.raises(DataError, match=r"size 5x5 differs.*6x5") as info:
        evaluate_folders(pred_dir, gt_dir)
    assert info.value.path == pred_dir / "img2.png"


def test_prediction_with_ignore_label_on_labelled_pixels_is_a_data_error(tmp_path):
    preds = {**PREDS, "img1": np.full_like(PREDS["img1"], 255)}
    pred_dir, gt_dir = write_folders(tmp_path, preds=preds)
    with pytest.raises(DataError, match="ignore label") as info:
        evaluate_folders(pred_dir, gt_dir)
    assert info.value.path == pred_dir / "img1.png"


def test_missing_or_empty_folders(tmp_path):
    with pytest.raises(DataError, match="folder not found"):
        evaluate_folders(tmp_path / "nope", tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no .png"):
        evaluate_folders(tmp_path, tmp_path / "empty")
