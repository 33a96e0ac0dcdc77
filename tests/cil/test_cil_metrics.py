import pytest

from scarce.cil import (
    AccuracyMatrix,
    average_incremental_accuracy,
    compute_metrics,
    forgetting_base,
    forgetting_initial,
    forgetting_max,
    last_accuracy,
)

# Hand-made: 3 tasks with 200, 100, 100 test images. Task 0 improves after phase 1 (95 > 90), so the two
# forgetting definitions differ.
A = [[90.0], [95.0, 80.0], [50.0, 60.0, 85.0]]
M = AccuracyMatrix(A, [200, 100, 100])


def test_seen_old_new_accuracy_are_size_weighted():
    assert M.seen_accuracy(0) == 90.0
    assert M.seen_accuracy(1) == pytest.approx((95 * 200 + 80 * 100) / 300)  # 90.0
    assert M.seen_accuracy(2) == pytest.approx((50 * 200 + 60 * 100 + 85 * 100) / 400)  # 61.25
    assert M.old_accuracy(0) is None and M.old_accuracy(2) == pytest.approx(16000 / 300)
    assert [M.new_accuracy(p) for p in range(3)] == [90.0, 80.0, 85.0]


def test_summary_metrics_against_hand_computation():
    assert average_incremental_accuracy(M) == pytest.approx((90 + 90 + 61.25) / 3)  # base phase included
    assert last_accuracy(M) == pytest.approx(61.25)
    assert forgetting_max(M) == pytest.approx(((95 - 50) + (80 - 60)) / 2)  # 32.5
    assert forgetting_initial(M) == pytest.approx(((90 - 50) + (80 - 60)) / 2)  # 30.0
    assert forgetting_base(M) == pytest.approx(40.0)
    assert forgetting_max(M, phase=1) == pytest.approx(-5.0) and forgetting_initial(M, phase=1) == pytest.approx(-5.0)


def test_compute_metrics_curves_and_partial_runs():
    m = compute_metrics(M)
    assert m["seen_accuracy"] == pytest.approx([90.0, 90.0, 61.25])
    assert m["old_accuracy"][0] is None and m["old_accuracy"][1] == 95.0
    assert m["forgetting_max_per_phase"][0] is None and m["forgetting_max_per_phase"][2] == pytest.approx(32.5)
    partial = compute_metrics(AccuracyMatrix([[70.0]], [10, 10]))
    assert partial["forgetting_max"] is None and partial["average_incremental_accuracy"] == 70.0


def test_malformed_matrices_are_rejected():
    with pytest.raises(ValueError, match="row 1"):
        AccuracyMatrix([[1.0], [1.0]], [1, 1])
    with pytest.raises(ValueError, match="rows"):
        AccuracyMatrix([[1.0], [1.0, 2.0], [1, 2, 3]], [1, 1])
    assert AccuracyMatrix.from_dict(M.to_dict()).per_task == A


def _phase_ticks(figure):
    """The x-axis tick positions inside the plotted range."""
    axes = figure.axes[0]
    lo, hi = axes.get_xlim()
    return [float(t) for t in axes.get_xticks() if lo <= t <= hi]


def test_report_phase_axes_have_whole_number_ticks(tmp_path, monkeypatch):
    from scarce.cil.protocol import Protocol
    from scarce.cil.report import write_compare_report, write_run_report
    from scarce.report.html import HtmlReport

    figures = []
    plot = HtmlReport.line_plot

    def record(self, *args, **kwargs):
        figures.append(plot(self, *args, **kwargs))
        return figures[-1]

    monkeypatch.setattr(HtmlReport, "line_plot", record)
    metrics = {"method": "icarl", "dataset": "d", "data_source": "s", "seed": 0, "primary_head": "cnn",
               "wall_time_s": 1.0, "heads": {"cnn": compute_metrics(M)}}
    protocol = Protocol.build(6, n_base=2, n_phases=2)
    write_run_report(tmp_path, metrics, {"cnn": M}, protocol)
    write_compare_report(tmp_path / "compare.html", "t", [{"method": "icarl"}], {"icarl": [90.0, 90.0, 61.25]})
    assert len(figures) == 3  # accuracy, old/new, comparison: 3 phases each (0, 1, 2)
    for figure in figures:
        assert _phase_ticks(figure) == [0.0, 1.0, 2.0]  # matplotlib's default puts ticks every 0.25


def _fake_run(avg: float, old: list, new: list, wall: float) -> dict:
    head = {"average_incremental_accuracy": avg, "last_accuracy": avg, "forgetting_max": None,
            "forgetting_initial": None, "seen_accuracy": [avg] * len(new), "old_accuracy": old, "new_accuracy": new}
    return {"heads": {"cnn": head}, "primary_head": "cnn", "wall_time_s": wall}


def test_compare_rows_split_old_and_new_and_name_the_base_learner():
    from scarce.cil.compare import base_row_name, table_rows

    names = ["lucir", "lucir_aanets", "lucir_aanets_rmm", "mnemonics", "lucir_placebo"]
    assert base_row_name("lucir_aanets_rmm", names) == "lucir_aanets"
    assert base_row_name("lucir_placebo", names) == "lucir"
    assert base_row_name("mnemonics", names) is None and base_row_name("lucir", names) is None
    assert base_row_name("lucirx", ["lucir"]) is None  # a prefix must end at an underscore

    results = {
        "lucir": [_fake_run(60.0, [None, 50.0, 40.0], [90.0, 80.0, 70.0], 10.0),
                  _fake_run(62.0, [None, 52.0, 42.0], [90.0, 78.0, 72.0], 14.0)],
        "lucir_rmm": [_fake_run(65.0, [None, 60.0, 50.0], [90.0, 70.0, 60.0], 30.0),
                      _fake_run(66.0, [None, 60.0, 56.0], [90.0, 72.0, 62.0], 30.0)],
    }
    rows, _ = table_rows(results)
    base, rmm = rows
    # by hand: lucir old means (50+40)/2 = 45 and (52+42)/2 = 47 -> 46.00 ± 1.41; new 75 and 75 -> 75.00 ± 0.00
    assert base["old acc (mean p≥1)"] == "46.00 ± 1.41" and base["new acc (mean p≥1)"] == "75.00 ± 0.00"
    assert base["base"] == "–" and base["Δ avg vs base"] == "–" and base["cost vs base"] == "–"
    # rmm: avg 65.5 vs 61 -> +4.50; wall 30 vs 12 -> 2.50; old 55, 58 -> 56.50 ± 2.12
    assert rmm["base"] == "lucir" and rmm["Δ avg vs base"] == "+4.50" and rmm["cost vs base"] == "2.50"
    assert rmm["old acc (mean p≥1)"] == "56.50 ± 2.12"
