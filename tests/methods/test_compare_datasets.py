"""`scarce compare` on a user's dataset: any VOC / COCO / folder layout, not only the generated scenes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import confusion_matrix

from scarce.cli import main
from scarce.data import load_voc
from scarce.io import read_json, read_label_png

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "methods"
TINY = ["model.backbone=test_efficientnet", "model.pretrained=null", "train.epochs=1", "train.batch_size=8",
        "train.augment.crop_size=64", "cam.scales=[1.0]", "cam.flip=false", "cam.batch_size=4"]


def test_compare_runs_on_a_voc_layout_folder(tiny_scenes, tmp_path):
    overrides = [*TINY, "data.kind=voc", f"data.root={tiny_scenes}"]
    sets = [arg for item in overrides for arg in ("--set", item)]
    assert main(["compare", str(CONFIGS / "cam.yaml"), "--out", str(tmp_path), "--seeds", "3",
                 "--base", str(CONFIGS / "base.yaml"), "--quiet", *sets]) == 0
    summary = read_json(tmp_path / "results.json")  # JSON keys: the seed as a string
    assert not (tmp_path / "seed3" / "data").exists()  # the named dataset is used as it is; the seed trains
    config = (tmp_path / "seed3" / "cam" / "config.yaml").read_text()
    assert f"root: {tiny_scenes}" in config and "seed: 3" in config
    assert [row["method"] for row in summary["rows"]] == ["cam"] and (tmp_path / "table.md").is_file()
    # the reported test mIoU is that of the masks written at the val-chosen threshold, against the folder's ground truth
    test = load_voc(tiny_scenes, "test", allow_empty=True)
    masks = tmp_path / "seed3" / "cam" / "masks" / "test"
    pred = np.concatenate([read_label_png(masks / f"{s.stem}.png").ravel() for s in test.samples])
    gt = np.concatenate([test.load_mask(s).ravel() for s in test.samples])
    keep = gt != 255
    cm = confusion_matrix(gt[keep], pred[keep], labels=list(range(test.num_classes + 1))).astype(float)
    union = cm.sum(0) + cm.sum(1) - np.diag(cm)
    expected = np.mean(np.diag(cm)[union > 0] / union[union > 0])
    assert summary["per_seed"]["cam"]["3"]["test"]["miou"] == pytest.approx(expected, abs=1e-12)
    assert read_json(tmp_path / "seed3" / "cam" / "compare.json")["test"] == summary["per_seed"]["cam"]["3"]["test"]


def test_compare_help_names_the_command(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["compare", "--help"])
    out = capsys.readouterr().out
    assert exit_.value.code == 0 and out.startswith("usage: scarce compare") and "--quiet" in out


def test_a_resumed_rib_run_records_the_notes_of_every_image(tiny_scenes, tmp_path):
    """RIB's steps and stop reasons per image come from the CAM files: after a run killed halfway through its test
    CAMs resumes, the record covers the images of both invocations, with what the first one wrote."""
    import shutil

    sets = [arg for item in [*TINY, "data.kind=voc", f"data.root={tiny_scenes}"] for arg in ("--set", item)]
    tiny_rib = ["rib:cam.scales=[1.0]", "rib:cam.options.rib_iter=2", "rib:cam.options.rib_batch=2",
                "rib:cam.options.pool_images=8"]
    command = ["compare", str(CONFIGS / "cam.yaml"), str(CONFIGS / "rib.yaml"), "--out", str(tmp_path), "--seeds", "3",
               "--base", str(CONFIGS / "base.yaml"), "--quiet", *sets,
               *[arg for item in tiny_rib for arg in ("--set-method", item)]]
    assert main(command) == 0
    run = tmp_path / "seed3" / "rib"
    first = read_json(run / "compare.json")["extra"]["image_notes"]
    stems = {split: [s.stem for s in load_voc(tiny_scenes, split, allow_empty=True).samples] for split in ("val", "test")}
    assert {split: sorted(notes) for split, notes in first.items()} == {k: sorted(v) for k, v in stems.items()}
    # the kill: the record, the scores and masks, and the second half of the test CAMs are gone
    for gone in ("compare.json", "metrics.json", "scores", "masks", "cams/test/_complete"):
        path = run / gone
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    for stem in stems["test"][len(stems["test"]) // 2 :]:
        (run / "cams" / "test" / f"{stem}.npz").unlink()
    assert main(command) == 0
    assert read_json(run / "compare.json")["extra"]["image_notes"] == first
