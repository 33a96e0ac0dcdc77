"""The CIL summary table over compare folders (benchmarks/cil_summary.py): paired gains and costs by hand."""

import importlib.util
import json
from pathlib import Path

_SPEC = importlib.util.spec_from_file_location("cil_summary", Path(__file__).parents[1] / "benchmarks" / "cil_summary.py")
cil_summary = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(cil_summary)


def _compare(folder: Path, runs: dict[str, list[tuple[int, float, float]]]) -> None:
    """A compare.json with, per method, (seed, average incremental accuracy, wall seconds) runs."""
    folder.mkdir()
    rows = [{"method": name, "head": "cnn *"} for name in runs] + [{"method": name, "head": "nme"} for name in runs]
    data = {"rows": rows, "runs": {name: [{"seed": s, "wall_time_s": w, "metrics": {
        "cnn": {"average_incremental_accuracy": a}, "nme": {"average_incremental_accuracy": 0.0}}}
        for s, a, w in rs] for name, rs in runs.items()}}
    (folder / "compare.json").write_text(json.dumps(data))


def test_summary_pairs_seeds_against_the_base_learner(tmp_path, capsys):
    _compare(tmp_path / "a", {"lucir": [(0, 50.0, 10.0), (1, 60.0, 10.0)],
                              "lucir_rmm": [(0, 54.0, 20.0), (1, 61.0, 30.0)],
                              "lucir_placebo": [(0, 49.0, 10.0), (1, 63.0, 10.0)]})
    _compare(tmp_path / "b", {"lwf": [(0, 40.0, 5.0), (1, 40.0, 5.0)], "lwf_placebo": [(0, 39.0, 5.0), (1, 38.0, 5.0)]})
    assert cil_summary.main([f"M=5:{tmp_path / 'a'},{tmp_path / 'b'}"]) == 0
    lines = {line.split(" | ")[0].lstrip("| "): line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")}
    # rmm: mean 57.5; paired gains +4 and +1 -> +2.50, both positive; wall 25 / 10
    assert lines["lucir_rmm"] == "| lucir_rmm | cnn | lucir | 57.50 (+2.50↑, ×2.50) |"
    # placebo: gains -1 and +3 -> +1.00 with no agreed sign
    assert lines["lucir_placebo"] == "| lucir_placebo | cnn | lucir | 56.00 (+1.00, ×1.00) |"
    assert lines["lwf_placebo"] == "| lwf_placebo | cnn | lwf | 38.50 (-1.50↓, ×1.00) |"
    assert lines["lucir"] == "| lucir | cnn | – | 55.00 |"
