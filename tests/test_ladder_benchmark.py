"""The ladder benchmark's multi-seed table (benchmarks/ladder.py): means and standard deviations by hand."""

import importlib.util
from pathlib import Path

import pytest

from scarce.errors import ConfigError

_SPEC = importlib.util.spec_from_file_location("ladder", Path(__file__).parents[1] / "benchmarks" / "ladder.py")
ladder = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(ladder)


def _row(method, refine, seeds, test, mask):
    return {"method": method, "refine": refine, "seeds_test": seeds, "val": test, "test": test, "fp": 0.5,
            "fn": 0.25, "mask_train": mask, "mask_fp": 0.5, "mask_fn": 0.25, "seed_cost_cam_units": 1.0,
            "cost_cam_units": 0.5}


def test_table_of_two_seeds_has_hand_computed_means_and_gains():
    seed0 = {"rows": [_row("cam", "none", 0.20, 0.20, 0.30), _row("cam", "crf", 0.20, 0.30, 0.40)],
             "segmentation": {"method": "cam", "refine": "crf", "test": {"miou": 0.30, "fp": 0.1, "fn": 0.2},
                              "val": {"miou": 0.3}, "ceiling_test": {"miou": 0.40, "fp": 0.1, "fn": 0.1},
                              "ceiling_val": {"miou": 0.4}, "ratio": 0.75}}
    seed1 = {"rows": [_row("cam", "none", 0.30, 0.30, 0.40), _row("cam", "crf", 0.30, 0.36, 0.52)],
             "segmentation": {"method": "cam", "refine": "crf", "test": {"miou": 0.34, "fp": 0.1, "fn": 0.2},
                              "val": {"miou": 0.3}, "ceiling_test": {"miou": 0.40, "fp": 0.1, "fn": 0.1},
                              "ceiling_val": {"miou": 0.4}, "ratio": 0.85}}
    lines = ladder.markdown([seed0, seed1]).splitlines()
    crf = next(line for line in lines if line.startswith("| cam | crf |"))
    cells = [cell.strip() for cell in crf.strip("|").split("|")]
    # seeds 20, 30 → 25 ± 7.07; refined 30, 36 → 33 ± 4.24; gain 10, 6 → 8 ± 2.83; mask 40, 52 → 46 ± 8.49;
    # mask gain over the unrefined masks (30, 40): 10, 12 → 11 ± 1.41
    assert cells[2] == "25.0 ± 7.1"
    assert cells[4] == "33.0 ± 4.2"
    assert cells[5] == "8.0 ± 2.8"
    assert cells[8] == "46.0 ± 8.5"
    assert cells[9] == "11.0 ± 1.4"
    ratio = next(line for line in lines if line.startswith("| segmentation / ceiling"))
    assert "80.0 ± 7.1 %" in ratio


def test_a_cost_undefined_on_a_seed_is_a_dash_not_a_crash():
    # a run resumed without its timings has no cost: NaN in memory, null once ladder.json is re-read
    seeds = [{"rows": [{**_row("cam", "none", 0.2, 0.2, 0.3), "cost_cam_units": cost}]} for cost in (0.5, None)]
    row = next(line for line in ladder.markdown(seeds).splitlines() if line.startswith("| cam | none |"))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[-1] == "–" and cells[-2] == "1.00 ± 0.00"
    assert ladder._cell([0.5, float("nan")], 1, 2) == "–"


def test_costs_need_a_recorded_classifier_time(tmp_path):
    with pytest.raises(ConfigError, match="training time"):
        ladder.cam_unit_seconds(tmp_path / "run")


def test_loss_curve_reads_every_epoch_and_prints_every_tenth(tmp_path):
    log = tmp_path / "train_log.csv"
    rows = "".join(f"{epoch},{epoch * 45},{1.0 / epoch},0.01,0.5\n" for epoch in range(1, 26))
    log.write_text("epoch,step,loss,lr,ce\n" + rows)
    curve = ladder.loss_curve(log)
    assert len(curve) == 25 and curve[3] == 0.25
    assert ladder._curve_text(curve) == "1: 1.000, 10: 0.100, 20: 0.050, 25: 0.040"


def test_segmentation_rungs_can_come_from_other_ladder_runs():
    rows = {"rows": [_row("cam", "crf", 0.20, 0.30, 0.40)]}
    first = {**rows, "segmentation": {"method": "cam", "refine": "crf", "test": {"miou": 0.10, "fp": 0.1, "fn": 0.2},
                                      "val": {"miou": 0.1}, "ceiling_test": {"miou": 0.50, "fp": 0.1, "fn": 0.1},
                                      "ceiling_val": {"miou": 0.5}, "ratio": 0.2, "config": {"train": {"epochs": 60}}}}

    def longer(method, test, val, ceiling_test, ceiling_val):
        return {"rows": [_row(method, "crf", 0.2, 0.3, 0.4)],
                "segmentation": {"method": method, "refine": "crf", "test": {"miou": test, "fp": 0.1, "fn": 0.2},
                                 "val": {"miou": val}, "ceiling_test": {"miou": ceiling_test, "fp": 0.1, "fn": 0.1},
                                 "ceiling_val": {"miou": ceiling_val}, "ratio": test / ceiling_test,
                                 "config": {"train": {"epochs": 120}}}}

    # test 45 / 50 = 90 %, 40 / 50 = 80 % → 85.0 ± 7.1; val 30 / 60 = 50 %, 48 / 60 = 80 % → 65.0 ± 21.2
    text = ladder.markdown([first, rows], [longer("cam", 0.45, 0.30, 0.50, 0.60), longer("lpcam", 0.40, 0.48, 0.50, 0.60)])
    assert "Segmentation: 2 of the 2 seed(s), 120 epochs." in text
    lines = text.splitlines()
    assert "85.0 ± 7.1 %" in next(line for line in lines if line.startswith("| segmentation / ceiling"))
    assert next(line for line in lines if line.startswith("| (val)")).startswith(
        "| (val) segmentation / ceiling | 39.0 ± 12.7 / 60.0 ± 0.0 = 65.0 ± 21.2 % |")
    assert "lpcam crf: segmentation 40.0 / 48.0, ceiling 50.0 / 60.0, ratio 80.0 %" in text
    assert "10.0" not in next(line for line in lines if line.startswith("| segmentation on the best"))


def test_table_adds_single_stage_rows(tmp_path, capsys, monkeypatch):
    import json

    monkeypatch.syspath_prepend(str(Path(__file__).parents[1] / "benchmarks"))  # as when run as a script
    seed = tmp_path / "seed0_ladder"
    seed.mkdir()
    (seed / "ladder.json").write_text(json.dumps({"rows": [_row("cam", "crf", 0.20, 0.30, 0.40)]}))
    score = {"miou": 0.42, "fp": 0.1, "fn": 0.2}
    run = tmp_path / "rs_epm-s0"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps({"seeds": {"train": score}, "single_stage": {"test": score}}))
    assert ladder.main(["table", str(seed), "--single-stage", str(run)]) == 0
    out = capsys.readouterr().out
    assert "| cam | crf |" in out
    assert next(line for line in out.splitlines() if line.startswith("| rs_epm |")).startswith("| rs_epm | 1 | 42.0 |")
