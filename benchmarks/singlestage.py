"""The tables of single-stage runs (RecurSeed ± a mixing method): mean ± std over seeds, costs in CAM units.

Runs are grouped by folder name without its ``-s<seed>`` suffix (``runs/rs_mix/rs_epm-s0``, ``-s1``, ... form
the row ``rs_epm``). Every figure comes from the runs' ``metrics.json`` (see ``scarce.singlestage.run`` for
what each is and which split chose its threshold):

- seeds M_rs on train (the seed's ablation "mIoU, FP, FN of the maps"), background threshold chosen on val;
- decoder maps on train restricted to the image's classes (the multi-stage route's pseudo masks);
- single stage on test: the decoder's prediction, nothing chosen on ground truth;
- multi stage on test: DeepLabV3+ trained on the decoder maps (runs with ``multi_stage: true``);
- (every run must be on the same data, the scenes' seed aside; a table over mixed data is refused)
- training cost in CAM units: the run's training seconds over the seconds the CAM pipeline's classifier took
  to train (``--cam-runs``: CAM run folders timed on the same machine, one per seed or one for all).

    python benchmarks/singlestage.py runs/rs_ablation/*-s? --cam-runs runs/ladder3/seed?/cam
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
from pathlib import Path
from typing import Any, Sequence

from scarce.config import changed_keys, load_yaml
from scarce.errors import ConfigError
from scarce.io import read_json, write_text
from scarce.report.tables import over_seeds

SEED_SUFFIX = re.compile(r"-s\d+$")
QUANTITIES = (  # (column title, where in metrics.json)
    ("seeds M_rs (train)", ("seeds", "train")),
    ("decoder maps (train)", ("decoder_maps",)),
    ("single stage (test)", ("single_stage", "test")),
    ("multi stage (test)", ("multi_stage", "test")),
)


def _at(metrics: dict[str, Any], keys: Sequence[str]) -> dict[str, Any] | None:
    node: Any = metrics
    for key in keys:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def _cell(values: Sequence[float], seeds: int, scale: float = 100.0, digits: int = 1) -> str:
    """Mean (± std) of the values; a cell over fewer than the row's ``seeds`` says how many it has."""
    if not values:
        return "–"
    mean = statistics.fmean(values) * scale
    text = f"{mean:.{digits}f}"
    if len(values) > 1:
        text += f" ± {statistics.stdev(values) * scale:.{digits}f}"
    return over_seeds(text, len(values), seeds)


def check_same_data(runs: Sequence[Path]) -> None:
    """Refuse a table over runs of different data (other than the scenes' seed): their rows would not compare.

    Runs without a stored config (test fixtures of metrics alone) are not checked."""
    configs = [(run, load_yaml(run / "config.yaml").get("data", {})) for run in runs if (run / "config.yaml").is_file()]
    for run, data in configs[1:]:
        changed = changed_keys(configs[0][1], data, ignore=("scenes.seed",))
        if changed:
            raise ConfigError(f"{configs[0][0]} and {run}: made on different data ({', '.join(changed)} differ); "
                              "one table compares runs on the same data")


def group_runs(runs: Sequence[Path]) -> dict[str, list[dict[str, Any]]]:
    """{row name: [metrics of each seed's run]} in the order the runs are given."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        path = run / "metrics.json"
        if not path.is_file():
            raise ConfigError(f"{run}: no metrics.json (the run has not finished)")
        groups.setdefault(SEED_SUFFIX.sub("", run.name), []).append(read_json(path))
    check_same_data(runs)
    return groups


def cam_unit_seconds(cam_runs: Sequence[Path]) -> float | None:
    """Mean seconds the CAM classifier took to train over the given CAM run folders (their ``timings.json``)."""
    seconds = [read_json(run / "timings.json").get("train") for run in cam_runs if (run / "timings.json").is_file()]
    if cam_runs and (len(seconds) != len(cam_runs) or None in seconds):
        raise ConfigError(f"{', '.join(map(str, cam_runs))}: need each run's classifier training time (timings.json)")
    return statistics.fmean(seconds) if seconds else None


def markdown(groups: dict[str, list[dict[str, Any]]], cam_unit: float | None) -> str:
    header = "| run | seeds | " + " | ".join(f"{title} mIoU | FP | FN" for title, _ in QUANTITIES) + \
        " | training cost (CAM units) |"
    lines = [header, "|" + "---|" * (3 * len(QUANTITIES) + 3)]
    for name, runs in groups.items():
        cells = [name, str(len(runs))]
        for _, keys in QUANTITIES:
            scored = [s for s in (_at(m, keys) for m in runs) if s is not None]
            cells += [_cell([s["miou"] for s in scored], len(runs)), _cell([s["fp"] for s in scored], len(runs), 1, 3),
                      _cell([s["fn"] for s in scored], len(runs), 1, 3)]
        # a run from before training times were kept, or resumed from a checkpoint that kept none (its time is
        # stored as null), is missing from its cell
        train = [t for t in (m.get("timings_s", {}).get("train") for m in runs) if t is not None]
        cells.append(_cell([t / cam_unit for t in train], len(runs), 1, 2) if cam_unit else "–")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", type=Path, nargs="+", help="finished single-stage run folders (NAME-s<seed>)")
    parser.add_argument("--cam-runs", type=Path, nargs="*", default=[],
                        help="CAM pipeline runs whose classifier training time is the cost unit")
    parser.add_argument("--out", type=Path, help="write the markdown here too")
    args = parser.parse_args(argv)
    text = markdown(group_runs(args.runs), cam_unit_seconds(args.cam_runs))
    if args.out is not None:
        write_text(args.out, text)
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
