"""Every method config of configs/methods runs end to end through the comparison on a tiny benchmark."""

from __future__ import annotations

from pathlib import Path

import pytest

from scarce.errors import ConfigError
from scarce.methods import MethodConfig
from scarce.methods.compare import compare, cost_units, load_method_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "methods"
TINY = [
    "data.scenes.n=20", "data.scenes.image_size=64", "data.scenes.scale_range=[0.3, 0.6]", "data.scenes.subset=true",
    "model.backbone=test_efficientnet", "model.pretrained=null", "train.epochs=1", "train.batch_size=8",
    "train.augment.crop_size=64", "cam.scales=[1.0]", "cam.batch_size=4",
]


def test_every_config_runs_on_a_tiny_benchmark(tmp_path):
    methods = sorted(p for p in CONFIGS.glob("*.yaml") if p.name != "base.yaml")
    names = {load_method_config(p).name for p in methods}
    assert {"cam", "recam", "lpcam", "puzzle", "erasing", "advcam", "rib"} <= names
    # the methods' own settings stay as configured, only made cheap where they are expensive
    tiny = TINY + ["eval.gallery=2"]
    cheap = {"advcam": ["cam.options.adv_iter=2"], "rib": ["cam.options.rib_iter=2", "cam.options.rib_batch=2"],
             "recam": ["train.epochs=1"], "puzzle": ["train.epochs=1"], "erasing": ["train.epochs=1"],
             "lpcam": ["cam.options.max_iter=5"]}
    summary = compare(methods, tmp_path, seeds=[0], base=CONFIGS / "base.yaml", overrides=tiny, method_overrides=cheap)
    rows = {row["method"]: row for row in summary["rows"]}
    assert set(rows) == names and rows["cam"]["gain_mean"] == 0.0
    for row in rows.values():
        assert 0.0 <= row["miou_mean"] <= 100.0 and row["train_cost"] > 0 and row["infer_cost"] > 0
    assert rows["lpcam"]["train_cost"] == 1.0 and rows["recam"]["train_cost"] > 1.0
    for name in ("table.md", "results.json", "report.html"):
        assert (tmp_path / name).is_file()
    assert "| recam |" in (tmp_path / "table.md").read_text()
    # a finished comparison is reused, not recomputed
    again = compare(methods, tmp_path, seeds=[0], base=CONFIGS / "base.yaml", overrides=tiny, method_overrides=cheap)
    assert again["per_seed"]["recam"][0]["timings_s"] == summary["per_seed"]["recam"][0]["timings_s"]


def test_method_config_checks():
    with pytest.raises(ConfigError):
        MethodConfig(name="x", start_from="scratch")
    with pytest.raises(ConfigError):
        MethodConfig(name="x", start_from="none", run={"objective": "recam"})
    cam = {"timings_s": {"train": 10.0, "prepare": 0.0, "cam_val": 1.0, "cam_test": 1.0}}
    recam = {"method": "recam", "start_from": "cam", "uses_cam_classifier": True,
             "timings_s": {"train": 5.0, "prepare": 0.0, "cam_val": 1.0, "cam_test": 1.0}}
    lpcam = {"method": "lpcam", "start_from": "none", "uses_cam_classifier": True,
             "timings_s": {"train": 0.1, "prepare": 2.0, "cam_val": 2.0, "cam_test": 2.0}}
    assert cost_units(recam, cam) == (1.5, 1.0) and cost_units(lpcam, cam) == (1.0, 3.0)
