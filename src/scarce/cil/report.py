"""HTML reports: one run (accuracy-versus-phase curves, old/new accuracy, the accuracy matrix) and a
comparison of several methods (mean over seeds)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from scarce.cil.metrics import DEFINITIONS, AccuracyMatrix
from scarce.cil.protocol import Protocol

_NAN = float("nan")


def _num(v: float | None) -> float:
    return _NAN if v is None else float(v)


def write_run_report(run_dir: Path, metrics: dict[str, Any], mats: dict[str, AccuracyMatrix], protocol: Protocol) -> None:
    from scarce.report.html import HtmlReport

    rep = HtmlReport(f"Class-incremental run: {metrics['method']}",
                     f"{metrics['dataset']} ({metrics['data_source']}), {protocol.describe()}, seed {metrics['seed']}")
    phases = list(range(len(next(iter(mats.values())).per_task)))
    rep.heading("Summary")
    rep.table([
        {"head": h + (" (primary)" if h == metrics["primary_head"] else ""),
         "avg. incremental acc.": m["average_incremental_accuracy"], "last acc.": m["last_accuracy"],
         "forgetting (max, Chaudhry)": _num(m["forgetting_max"]), "forgetting (initial − final)": _num(m["forgetting_initial"]),
         "forgetting (base classes)": _num(m["forgetting_base"])}
        for h, m in metrics["heads"].items()
    ], caption="percent; wall time {:.1f} s".format(metrics["wall_time_s"]), float_format="{:.2f}")
    rep.line_plot(phases, {h: m["seen_accuracy"] for h, m in metrics["heads"].items()},
                  "phase", "accuracy on all seen classes (%)", title="Accuracy versus phase", integer_x=True)
    series = {}
    for h, m in metrics["heads"].items():
        series[f"{h} old"] = [_num(v) for v in m["old_accuracy"]]
        series[f"{h} new"] = [_num(v) for v in m["new_accuracy"]]
    rep.line_plot(phases, series, "phase", "accuracy (%)", title="Old-class and new-class accuracy", integer_x=True)
    for h, mat in mats.items():
        rows = []
        for p, row in enumerate(mat.per_task):
            r: dict[str, object] = {"after phase": p}
            for t in range(len(mat.task_sizes)):
                r[f"task {t}"] = row[t] if t < len(row) else None
            r["all seen"] = mat.seen_accuracy(p)
            rows.append(r)
        rep.table(rows, caption=f"Accuracy matrix ({h} head, %): row = after phase p, column = classes of phase t",
                  float_format="{:.2f}")
    rep.heading("Definitions", 3)
    for key, text in DEFINITIONS.items():
        rep.paragraph(f"{key}: {text}")
    rep.save(run_dir / "report.html")


def write_compare_report(path: Path, title: str, rows: list[dict[str, Any]], curves: dict[str, list[float]]) -> None:
    from scarce.report.html import HtmlReport

    rep = HtmlReport(title)
    rep.table(rows, caption="mean ± std over seeds (percent); primary head per method", float_format="{:.2f}")
    n = max(len(v) for v in curves.values())
    rep.line_plot(list(range(n)), {k: v + [math.nan] * (n - len(v)) for k, v in curves.items()},
                  "phase", "accuracy on all seen classes (%)", title="Accuracy versus phase (mean over seeds)",
                  integer_x=True)
    rep.save(path)
