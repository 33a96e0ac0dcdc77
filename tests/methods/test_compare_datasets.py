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
