"""The single-stage benchmark's table (benchmarks/singlestage.py): grouping by seed suffix, means by hand, costs."""

import importlib.util
import json
from pathlib import Path

import pytest

from scarce.errors import ConfigError

_SPEC = importlib.util.spec_from_file_location("singlestage", Path(__file__).parents[1] / "benchmarks" / "singlestage.py")
singlestage = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(singlestage)


def _write_run(folder: Path, seeds: float, single: float, train_s: float | None, multi: float | None = None) -> Path:
    score = lambda miou: {"miou": miou, "fp": 0.2, "fn": 0.4}  # noqa: E731
    metrics = {"seeds": {"threshold": 0.3, "train": score(seeds)}, "decoder_maps": score(0.5),
               "single_stage": {"val": score(0.0), "test": score(single)},
               "timings_s": {} if train_s is None else {"train": train_s}}
    if multi is not None:
        metrics["multi_stage"] = {"test": score(multi)}
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder


def test_rows_group_seeds_and_average_by_hand(tmp_path, capsys):
    runs = [_write_run(tmp_path / "rs-s0", 0.30, 0.40, 200.0), _write_run(tmp_path / "rs-s1", 0.40, 0.50, 400.0),
            _write_run(tmp_path / "rs_epm-s0", 0.50, 0.60, 600.0, multi=0.55)]
    cams = []
    for seed, seconds in ((0, 100.0), (1, 300.0)):
        cams.append(tmp_path / f"cam{seed}")
        cams[-1].mkdir()
        (cams[-1] / "timings.json").write_text(json.dumps({"train": seconds}))
    assert singlestage.main([str(r) for r in runs] + ["--cam-runs", *map(str, cams)]) == 0
    lines = capsys.readouterr().out.splitlines()
    rs = [c.strip() for c in next(line for line in lines if line.startswith("| rs |")).strip("|").split("|")]
    epm = [c.strip() for c in next(line for line in lines if line.startswith("| rs_epm |")).strip("|").split("|")]
    # seeds 30, 40 → 35 ± 7.07; single stage 40, 50 → 45 ± 7.07; CAM unit = mean(100, 300) = 200 s →
    # costs 1, 2 → 1.50 ± 0.71; no multi stage in these runs
    assert rs[1] == "2" and rs[2] == "35.0 ± 7.1" and rs[8] == "45.0 ± 7.1" and rs[11] == "–"
    assert rs[-1] == "1.50 ± 0.71"
    assert epm[1] == "1" and epm[11] == "55.0" and epm[-1] == "3.00"


def test_a_cost_over_fewer_seeds_than_the_row_says_so(tmp_path):
    # rs-s0 ran before training times were kept: its row's cost is seed 1's alone (400 s / 200 s) and says so
    runs = [_write_run(tmp_path / "rs-s0", 0.30, 0.40, None), _write_run(tmp_path / "rs-s1", 0.40, 0.50, 400.0)]
    text = singlestage.markdown(singlestage.group_runs(runs), cam_unit=200.0)
    row = next(line for line in text.splitlines() if line.startswith("| rs |"))
    assert row.rstrip(" |").endswith("2.00 (1 of 2 seeds)")


def test_unfinished_runs_and_untimed_cam_runs_are_named(tmp_path):
    (tmp_path / "rs-s0").mkdir()
    with pytest.raises(ConfigError, match="rs-s0"):
        singlestage.group_runs([tmp_path / "rs-s0"])
    (tmp_path / "cam").mkdir()
    (tmp_path / "cam" / "timings.json").write_text(json.dumps({"cam_val": 3.0}))
    with pytest.raises(ConfigError, match="cam"):
        singlestage.cam_unit_seconds([tmp_path / "cam"])


def test_a_table_over_runs_on_different_data_is_refused(tmp_path):
    runs = [_write_run(tmp_path / f"rs-s{seed}", 0.3, 0.4, 100.0) for seed in (0, 1)]
    runs.append(_write_run(tmp_path / "rs_epm-s0", 0.3, 0.4, 100.0))
    for seed, run in zip((0, 1, 0), runs):  # the scenes' seed may differ: it is what the seeds of a row are
        (run / "config.yaml").write_text(f"data:\n  kind: scenes\n  scenes: {{seed: {seed}, image_size: 128}}\n")
    assert set(singlestage.group_runs(runs)) == {"rs", "rs_epm"}
    (runs[2] / "config.yaml").write_text("data:\n  kind: scenes\n  scenes: {seed: 0, image_size: 160}\n")
    with pytest.raises(ConfigError, match=r"rs_epm-s0: made on different data \(scenes\.image_size differ\)"):
        singlestage.group_runs(runs)


def test_a_multi_stage_score_over_fewer_seeds_than_the_row_says_so(tmp_path):
    # only seed 0 added the multi-stage route: the cell is its score alone (55.0) and says so; seed 1 has none
    runs = [_write_run(tmp_path / "rs_epm-s0", 0.30, 0.40, 200.0, multi=0.55),
            _write_run(tmp_path / "rs_epm-s1", 0.40, 0.50, 400.0)]
    text = singlestage.markdown(singlestage.group_runs(runs), cam_unit=200.0)
    line = next(line for line in text.splitlines() if line.startswith("| rs_epm |"))
    row = [cell.strip() for cell in line.strip("|").split("|")]
    assert row[11] == "55.0 (1 of 2 seeds)" and row[8] == "45.0 ± 7.1" and row[-1] == "1.50 ± 0.71"
