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
