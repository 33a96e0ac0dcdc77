"""Every method config of configs/methods runs end to end through the comparison on a tiny benchmark."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scarce.errors import ConfigError
from scarce.io import read_json, read_label_png, write_json
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
    assert "| recam |" in (tmp_path / "table.md").read_text() and "FN deep" in (tmp_path / "table.md").read_text()
    # the error profile counts every background pixel predicted as object and every object pixel missed
    profile = summary["per_seed"]["cam"][0]["error_profile"]
    false_positives = misses = 0
    for png in (tmp_path / "seed0" / "cam" / "masks" / "test").glob("*.png"):
        pred, gt = read_label_png(png), read_label_png(tmp_path / "seed0" / "data" / "SegmentationClass" / png.name)
        false_positives += int(((gt == 0) & (pred != 0)).sum())
        misses += int(((gt != 0) & (gt != 255) & (pred == 0)).sum())
    assert (sum(profile["fp_counts"]), sum(profile["fn_counts"])) == (false_positives, misses) and misses > 0
    # a finished comparison is reused, not recomputed; a result from before profiles gets one from its masks
    done = tmp_path / "seed0" / "recam" / "compare.json"
    write_json(done, {k: v for k, v in read_json(done).items() if k != "error_profile"})
    # and one from before undefined shares were stored as null (NaN) gets its profile again, without NaN
    old_style = tmp_path / "seed0" / "lpcam" / "compare.json"
    record = read_json(old_style)
    record["error_profile"] = {**record["error_profile"], "fp_far": float("nan"), "fp_shares": [float("nan")] * 4}
    old_style.write_text(json.dumps(record))  # as the writer of then did: a bare NaN token (write_json writes null)
    assert "NaN" in old_style.read_text()
    again = compare(methods, tmp_path, seeds=[0], base=CONFIGS / "base.yaml", overrides=tiny, method_overrides=cheap)
    assert again["per_seed"]["recam"][0]["timings_s"] == summary["per_seed"]["recam"][0]["timings_s"]
    for counts in ("fp_counts", "fn_counts"):
        assert again["per_seed"]["recam"][0]["error_profile"][counts] == summary["per_seed"]["recam"][0]["error_profile"][counts]
    assert again["per_seed"]["lpcam"][0]["error_profile"] == summary["per_seed"]["lpcam"][0]["error_profile"]  # NaN ≠ NaN
    # a finished run is reused only for the configuration it was made with
    changed = {**cheap, "recam": ["train.epochs=2"]}
    with pytest.raises(ConfigError, match=r"seed0/recam: finished with another configuration \(train.epochs differ\)"):
        compare(methods, tmp_path, seeds=[0], base=CONFIGS / "base.yaml", overrides=tiny, method_overrides=changed)


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
    # a training time stored as unknown (a resume from a checkpoint that kept none) is no cost, not 0 s
    unknown = {**recam, "timings_s": {**recam["timings_s"], "train": None}}
    assert cost_units(unknown, cam) == (None, 1.0)


def test_a_train_cost_over_fewer_seeds_than_the_row_says_so():
    from scarce.methods.compare import markdown_table, summarize

    def record(seed: int, train: float | None) -> dict:
        return {"method": "cam", "seed": seed, "start_from": "imagenet", "test": {"miou": 0.3, "fp": 0.1, "fn": 0.2},
                "test_oracle": {"peak_iou": 0.31}, "threshold": 0.5, "error_profile": {"fp_far": 0.0, "fn_deep": 0.0},
                "timings_s": {"train": train, "prepare": 0.0, "cam_test": 1.0}}

    # CAM is its own unit: seed 1's time is unknown, so the cost is seed 0's alone and says so
    rows = summarize({"cam": {0: record(0, 10.0), 1: record(1, None)}})
    assert rows[0]["train_cost"] == 1.0 and rows[0]["train_cost_seeds"] == 1
    assert "| 1.00 (1 of 2 seeds) | 1.00 |" in markdown_table(rows)
    none_known = summarize({"cam": {0: record(0, None)}})
    assert none_known[0]["train_cost_seeds"] == 0 and "| – | 1.00 |" in markdown_table(none_known)
    # results.json stays strict JSON: an unknown cost is null, not NaN (which json.loads elsewhere rejects)
    assert none_known[0]["train_cost"] is None
    json.dumps(none_known, allow_nan=False)


def test_a_share_undefined_on_a_seed_is_left_out_of_the_mean_and_said_so():
    """A seed whose masks have no false positive has no FP-far share (None; NaN in older records)."""
    from scarce.methods.compare import markdown_table, summarize

    def record(fp_far: float | None) -> dict:
        return {"start_from": "imagenet", "test": {"miou": 0.3, "fp": 0.1, "fn": 0.2}, "test_oracle": {"peak_iou": 0.31},
                "threshold": 0.5, "error_profile": {"fp_far": fp_far, "fn_deep": 0.25},
                "timings_s": {"train": 1.0, "prepare": 0.0, "cam_test": 1.0}}

    rows = summarize({"cam": {0: record(0.2), 1: record(None), 2: record(float("nan")), 3: record(0.4)}})
    assert rows[0]["fp_far"] == pytest.approx(0.3) and rows[0]["fp_far_seeds"] == 2
    assert rows[0]["fn_deep"] == 0.25 and rows[0]["fn_deep_seeds"] == 4
    assert "| 0.30 (2 of 4 seeds) | 0.25 |" in markdown_table(rows)
    none = summarize({"cam": {0: record(None)}})
    assert none[0]["fp_far"] is None and "| – | 0.25 |" in markdown_table(none)
    json.dumps(rows + none, allow_nan=False)


def test_scale_controls_match_the_methods_they_control():
    """The controls isolate a method from its inference scales: each copies exactly the settings it claims to."""
    from scarce.config import load_yaml, merge

    controls = {p.stem: load_method_config(p) for p in (CONFIGS / "controls").glob("*.yaml")}
    base_scales = load_yaml(CONFIGS / "base.yaml")["cam"]["scales"]
    for method in ("advcam", "rib"):  # at CAM's scales by default; the reduced-scale runs are controls
        own = load_method_config(CONFIGS / f"{method}.yaml").run["cam"]
        assert own["scales"] == base_scales
        reduced = controls[f"{method}_reduced_scales"].run["cam"]
        assert reduced["scales"] != base_scales and set(reduced["scales"]) < set(base_scales)
        assert {k: v for k, v in reduced.items() if k != "scales"} == {k: v for k, v in own.items() if k != "scales"}
        assert controls[f"cam_at_{method}_reduced_scales"].run == {"cam": {"scales": reduced["scales"]}}
    # the scores control changes only which scores AdvCAM climbs
    advcam = load_method_config(CONFIGS / "advcam.yaml").run
    assert advcam["cam"]["options"]["logits"] == "relu_cam"
    assert controls["advcam_classifier_logits"].run == merge(advcam, {"cam": {"options": {"logits": "classifier"}}})
    scale_controls = [c for name, c in controls.items() if "scales" in name]
    assert all(c.start_from == "none" for c in scale_controls)  # all read the CAM classifier of the seed
    # the continued-training control matches the epochs of every method that continues the CAM classifier
    continued = controls["cam_continued"]
    assert continued.start_from == "cam" and set(continued.run) == {"train"}
    for method in ("puzzle", "erasing"):
        own = load_method_config(CONFIGS / f"{method}.yaml")
        assert own.start_from == "cam" and own.run["train"]["epochs"] == continued.run["train"]["epochs"]
    # OC-CSE at its paper's schedule changes only where E starts and for how long; its control trains as long
    erasing, paper = load_method_config(CONFIGS / "erasing.yaml"), controls["erasing_paper_schedule"]
    assert (paper.start_from, paper.run["train"]) == ("imagenet", {"epochs": 15, "weight_decay": 0.0005})
    assert paper.run == merge(erasing.run, {"train": {"epochs": 15}})
    longer = controls["cam_15_epochs"]
    assert (longer.start_from, longer.run) == ("imagenet", {"train": paper.run["train"]})


def test_scale_controls_run_on_a_tiny_benchmark(tmp_path):
    configs = [CONFIGS / "cam.yaml", *sorted((CONFIGS / "controls").glob("*.yaml"))]
    cheap = {"advcam_reduced_scales": ["cam.options.adv_iter=2"], "advcam_classifier_logits": ["cam.options.adv_iter=2"],
             "cam_continued": ["train.epochs=1"], "cam_15_epochs": ["train.epochs=2"],
             "erasing_paper_schedule": ["train.epochs=2"],
             "rib_reduced_scales": ["cam.options.rib_iter=2", "cam.options.rib_batch=2"]}
    summary = compare(configs, tmp_path, seeds=[0], base=CONFIGS / "base.yaml", overrides=TINY, method_overrides=cheap)
    rows = {row["method"]: row for row in summary["rows"]}
    assert set(rows) == {"cam", "cam_at_advcam_reduced_scales", "cam_at_rib_reduced_scales", "advcam_reduced_scales",
                         "rib_reduced_scales", "cam_continued", "advcam_classifier_logits", "cam_15_epochs",
                         "erasing_paper_schedule"}
    for row in rows.values():
        assert 0.0 <= row["miou_mean"] <= 100.0


def test_partial_activation_variant_changes_only_the_scenes():
    """The variant benchmark (a base: chain onto base.yaml) changes only the scenes and the crop that follows them."""
    from scarce.config import load_yaml, merge, parse_overrides

    base = load_yaml(CONFIGS / "base.yaml")
    variant = load_yaml(CONFIGS / "variants" / "partial_activation.yaml")
    changed = {"data": {"scenes": {"image_size": 256, "part_size": 0.25, "shape_noise": 0.5, "cooccurrence": 0.0}},
               "train": {"augment": {"crop_size": 256}}}
    assert variant == merge(base, changed)
    # ... so it is the benchmark of the documented --set command line
    as_run = ["data.scenes.part_size=0.25", "data.scenes.shape_noise=0.5", "data.scenes.cooccurrence=0.0",
              "data.scenes.image_size=256", "train.augment.crop_size=256"]
    assert variant == merge(base, parse_overrides(as_run))
