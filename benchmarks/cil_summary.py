"""One table over several `scarce cil compare` folders (e.g. one per memory size): each method's average
incremental accuracy on its usual head, its gain over its base learner and its cost, side by side.

    python benchmarks/cil_summary.py M=5:runs/cil/fmnist_all_m5,runs/cil/fmnist_lwf_placebo_m5 \
        M=10:runs/cil/fmnist_all_m10 M=20:runs/cil/fmnist_all_m20

Each column is one ``LABEL:FOLDER[,FOLDER…]``; the folders of a column are merged (their method names must
differ). The base learner of a row is the one `scarce cil compare` names (the longest other row name that
this one extends by ``_suffix``), looked up within the same column. A gain is marked with the sign of every
seed's paired difference when all seeds agree (``↑``/``↓``), so a mean gain smaller than the seed spread is
visible as such.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Any

from scarce.cil.compare import base_row_name
from scarce.io import read_json


def load_column(folders: list[Path]) -> dict[str, dict[str, Any]]:
    """method → {"head": usual head, "avg": {seed: accuracy}, "wall": mean wall seconds}."""
    methods: dict[str, dict[str, Any]] = {}
    for folder in folders:
        data = read_json(folder / "compare.json")
        primary = {r["method"]: r["head"].rstrip(" *") for r in data["rows"] if r["head"].endswith("*")}
        for name, runs in data["runs"].items():
            if name in methods:
                raise SystemExit(f"{folder}: method {name} already read from another folder of the column")
            head = primary[name]
            methods[name] = {"head": head,
                             "avg": {r["seed"]: r["metrics"][head]["average_incremental_accuracy"] for r in runs},
                             "wall": statistics.fmean(r["wall_time_s"] for r in runs)}
    return methods


def cell(method: dict[str, Any], base: dict[str, Any] | None) -> str:
    values = list(method["avg"].values())
    text = f"{statistics.fmean(values):.2f}"
    if base is None:
        return text
    seeds = sorted(set(method["avg"]) & set(base["avg"]))
    diffs = [method["avg"][s] - base["avg"][s] for s in seeds]
    mark = "↑" if all(d > 0 for d in diffs) else "↓" if all(d < 0 for d in diffs) else ""
    return f"{text} ({statistics.fmean(diffs):+.2f}{mark}, ×{method['wall'] / base['wall']:.2f})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("columns", nargs="+", metavar="LABEL:FOLDER[,FOLDER]")
    args = parser.parse_args(argv)
    columns: list[tuple[str, dict[str, dict[str, Any]]]] = []
    for spec in args.columns:
        label, _, folders = spec.partition(":")
        columns.append((label, load_column([Path(f) for f in folders.split(",")])))
    names = list(dict.fromkeys(n for _, col in columns for n in col))
    print("Average incremental accuracy (percent, mean over seeds) on each method's usual head; in brackets: "
          "mean paired gain over the base learner (↑/↓: every seed agrees) and wall-time ratio to it.\n")
    print("| method | head | base | " + " | ".join(label for label, _ in columns) + " |")
    print("|---|---|---|" + "---|" * len(columns))
    for name in names:
        first = next(col[name] for _, col in columns if name in col)
        row = [name, first["head"]]
        base_name = None
        cells = []
        for _, col in columns:
            if name not in col:
                cells.append("–")
                continue
            base_name = base_row_name(name, list(col))
            cells.append(cell(col[name], col.get(base_name) if base_name else None))
        print("| " + " | ".join(row + [base_name or "–"] + cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
