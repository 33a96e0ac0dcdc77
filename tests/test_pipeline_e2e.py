"""End-to-end: the CLI from scenes generation to a scored report on tiny data (the `make demo` path)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from scarce.cli import main
from scarce.io import read_label_png

TINY = [
    "--set", "data.scenes.n=30", "--set", "data.scenes.image_size=64", "--set", "data.scenes.scale_range=[0.3,0.6]",
    "--set", "data.scenes.subset=true",
    "--set", "model.backbone=test_efficientnet", "--set", "model.pretrained=null",
    "--set", "train.epochs=1", "--set", "train.batch_size=8", "--set", "train.augment.crop_size=64",
    "--set", "cam.scales=[1.0,0.5]", "--set", "eval.gallery=2",
    "--set", "segment.model.encoder=test_efficientnet", "--set", "segment.model.pretrained=null",
    "--set", "segment.model.decoder_channels=32", "--set", "segment.train.epochs=1",
    "--set", "segment.train.batch_size=4", "--set", "segment.train.augment.crop_size=64",
]


def _not_json(token: str) -> None:
    raise AssertionError(f"{token} is not JSON: strict parsers (JavaScript, jq, Go) reject the file")


@pytest.mark.slow
def test_demo_end_to_end_then_stage_commands(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["demo", "--out", str(run), "--quiet", *TINY]) == 0
    out = capsys.readouterr().out
    assert "CAM seed mIoU" in out and "val -> test" in out and "oracle Peak IoU" in out
    assert "Fashion-MNIST objects from: shipped subset" in out  # the scenes depend on it, so the summary says it

    metrics = json.loads((run / "metrics.json").read_text(), parse_constant=_not_json)
    assert metrics["protocol"]["threshold_chosen_on"] == "val"
    assert metrics["protocol"]["scored_on"] == "test"
    assert 0.0 <= metrics["test"]["miou"] <= metrics["test_oracle"]["peak_iou"] + 1e-12
    assert len(metrics["test"]["iou"]) == 11  # background + 10 Fashion-MNIST classes
    import torch
    env = metrics["environment"]  # the versions a figure was produced with, so it can be re-checked
    assert torch.__version__.startswith(env["libraries"]["torch"]) and env["torch_threads"] == torch.get_num_threads()
    # The chosen threshold is the val sweep's argmax; the test curve at that threshold is the reported score.
    curves = metrics["curves"]
    best = int(np.nanargmax(curves["val_miou"]))
    assert curves["thresholds"][best] == pytest.approx(metrics["threshold"])
    assert curves["test_miou"][best] == pytest.approx(metrics["test"]["miou"])

    html = (run / "report.html").read_text()
    assert "data:image/png;base64" in html and "Per-class IoU" in html
    test_stems = (run / "data/ImageSets/Segmentation/test.txt").read_text().split()
    masks = sorted(p.stem for p in (run / "masks/test").glob("*.png"))
    assert masks == sorted(test_stems)
    # the ladder: CRF-refined maps of every split, pseudo masks of train, the segmentation model and its ceiling
    for split in ("train", "val", "test"):
        assert len(list((run / "refined" / split).glob("*.npz"))) == len((run / f"data/ImageSets/Segmentation/{split}.txt")
                                                                           .read_text().split())
    assert metrics["refined"]["steps"] == [{"name": "crf", "options": {}}]
    assert metrics["masks"]["train"]["threshold_chosen_on"] == "val"
    assert {"val", "test"} <= set(metrics["segmentation"]) and {"val", "test"} <= set(metrics["ceiling"])
    for rung in ("refined maps", "pseudo masks: mask mIoU (train)", "segmentation", "fully supervised ceiling"):
        assert rung in out

    # A second `demo` on the same folder skips every finished stage and reproduces the numbers.
    assert main(["demo", "--out", str(run), "--quiet", *TINY]) == 0
    assert json.loads((run / "metrics.json").read_text())["test"] == metrics["test"]

    # Stage commands work on the run folder; eval-masks scores the pseudo masks like the pipeline did.
    assert main(["masks", str(run), "--split", "test", "--fg", "0.6", "--bg", "0.2"]) == 0
    confident = read_label_png(run / "masks/test" / f"{test_stems[0]}.png")
    assert set(np.unique(confident)) <= {0, 255, *range(1, 11)}
    assert main(["masks", str(run), "--split", "test"]) == 0  # back to the val-chosen threshold
    gt = tmp_path / "gt"
    gt.mkdir()
    for stem in test_stems:
        (gt / f"{stem}.png").write_bytes((run / "data/SegmentationClass" / f"{stem}.png").read_bytes())
    scores_path = tmp_path / "scores.json"
    assert main(["eval-masks", "--pred", str(run / "masks/test"), "--gt", str(gt), "--num-classes", "10",
                 "--out", str(scores_path)]) == 0
    # the demo's test masks come from the CRF-refined maps at their val-chosen threshold
    assert json.loads(scores_path.read_text())["miou"] == pytest.approx(metrics["masks"]["test"]["miou"], abs=1e-9)
    assert json.loads(scores_path.read_text())["num_classes"] == 11  # 10 object classes + background
    # A ground-truth folder with files the predictions lack is an error naming the file.
    assert main(["eval-masks", "--pred", str(run / "masks/test"), "--gt", str(run / "data/SegmentationClass")]) == 1
    assert ".png" in capsys.readouterr().err


def test_demo_refuses_a_folder_with_another_config(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("data: {kind: scenes}\n")
    assert main(["demo", "--out", str(run), "--quiet", *TINY]) == 1
    assert "another configuration" in capsys.readouterr().err


def test_unknown_config_key_is_reported(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "r"), "--set", "train.epochz=3"]) == 1
    assert "unknown key(s) epochz" in capsys.readouterr().err
