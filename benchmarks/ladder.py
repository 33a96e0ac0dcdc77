"""The WSSS ladder on finished seed runs: methods × refinements × pseudo masks, then a segmentation model and
its fully supervised ceiling; and the table of several seeds.

``run``: for each seed run given (folders made by ``scarce run`` or ``scarce compare`` with train CAMs, i.e.
``eval.mask_splits`` including train; one per CAM method), every refinement variant is run in its own folder
``OUT/<method>/<refinement>`` that shares the run's classifier and CAMs (hard links, so nothing is recomputed):
refine → threshold chosen on val → pseudo masks of train (scored against the train ground truth, "mask mIoU (train)") and test. The
segmentation model is then trained on the train masks of the variant (over all methods and refinements) with
the best **val** mIoU of its refined maps (never chosen on test or on the train ground truth), and the fully
supervised ceiling on the train ground truth, both with the same recipe and scored on val and test. Costs are
in CAM units: seconds of a stage divided by the seconds the CAM classifier took to train (the first run given,
or the ``cam`` run beside a comparison's method).

    python benchmarks/ladder.py run runs/ladder3/seed0/{cam,recam,lpcam} --out runs/ladder3/seed0_ladder \\
        --refine none pamr crf random_walk --set segment.train.epochs=30

``table``: the mean ± standard deviation over the seeds' ``ladder.json`` files, as markdown.

    python benchmarks/ladder.py table runs/ladder3/seed*_ladder --out runs/ladder3/table.md
    python benchmarks/ladder.py table runs/ladder3/seed?_ladder --segmentation runs/ladder3/seed?_ladder120
    python benchmarks/ladder.py table runs/ladder3/seed?_ladder --single-stage runs/rs_mix/*-s?

Each command prints its markdown table; ``run`` also writes ``ladder.json`` and ``table.md`` into ``--out``.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import shutil
import statistics
import sys
from pathlib import Path
from typing import Any, Sequence

from scarce.config import dump_yaml, load_yaml, merge, parse_overrides, to_dict
from scarce.errors import ConfigError
from scarce.io import read_json, write_json, write_text
from scarce.layout import RunLayout
from scarce.methods.compare import BASELINE, MethodRun
from scarce.pipeline import load_run_config

NONE = "none"
PROTOCOL = ("thresholds chosen on val; refined maps and segmentation scored on test; masks scored on train; the "
            "variant segmented is the one with the best val mIoU of its refined maps")


def share(source: Path, target: Path) -> None:
    """Hard-link a finished folder's files into ``target`` (copy where links are impossible)."""
    for path in source.rglob("*"):
        if path.is_file():
            out = target / path.relative_to(source)
            out.parent.mkdir(parents=True, exist_ok=True)
            if not out.exists():
                try:
                    os.link(path, out)
                except OSError:
                    shutil.copy2(path, out)


def classifier_of(seed_run: Path) -> Path:
    """The classifier a seed run's CAMs came from: its own, or (an inference-only method of ``scarce compare``,
    such as LPCAM) the CAM run's beside it."""
    for candidate in (RunLayout(seed_run).model, RunLayout(seed_run.parent / BASELINE).model):
        if candidate.is_file():
            return candidate
    raise ConfigError(f"{seed_run}: no trained classifier in it or in {seed_run.parent / BASELINE}")


def cam_unit_seconds(seed_run: Path) -> float:
    """Seconds the CAM classifier took to train: the comparison's CAM run beside ``seed_run``, else its own."""
    sibling = RunLayout(seed_run.parent / BASELINE).timings
    timings_file = sibling if sibling.is_file() else RunLayout(seed_run).timings
    timings = read_json(timings_file) if timings_file.is_file() else {}
    if timings.get("train") is None:  # missing, or null: resumed from a checkpoint that kept no time
        raise ConfigError(f"{seed_run}: no classifier training time recorded to express costs in CAM units")
    return float(timings["train"])


def variant_run(seed_run: Path, folder: Path, refine: str, settings: dict[str, Any], progress: bool,
                options: dict[str, Any] | None = None) -> MethodRun:
    """A run that reuses ``seed_run``'s data, classifier and CAMs and adds one refinement (or none)."""
    base = load_yaml(seed_run / "config.yaml")
    data_root = base["data"].get("root") or str((seed_run / "data").resolve())
    steps = [] if refine == NONE else [{"name": refine, "options": options or {}}]
    changes = merge({"data": {"root": data_root}, "refine": steps,
                     "eval": {"mask_splits": ["train", "test"]}}, settings)
    cfg = load_run_config(None, merge(base, changes))
    source, target = RunLayout(seed_run), RunLayout(folder)
    share(source.train, target.train)
    for split in ("train", "val", "test"):
        share(source.cams(split), target.cams(split))
    return MethodRun(cfg, folder, progress=progress, classifier=classifier_of(seed_run))


def seed_cost_seconds(seed_run: Path) -> float:
    """What the seed run's own stages cost: its training (if any), preparation and CAMs of every split; NaN
    where one of them is unknown (resumed from a checkpoint that kept no time)."""
    timings = read_json(RunLayout(seed_run).timings)
    parts = [v for k, v in timings.items() if k in ("train", "prepare") or k.startswith("cam_")]
    return math.nan if None in parts else sum(parts)


def run_ladder(args: argparse.Namespace) -> int:
    settings = parse_overrides(args.overrides)
    per_refiner: dict[str, list[str]] = {}
    for item in args.refine_overrides:
        name, _, setting = item.partition(":")
        per_refiner.setdefault(name, []).append(setting)
    options = {name: parse_overrides(items) for name, items in per_refiner.items()}
    progress = not args.quiet
    unit = cam_unit_seconds(args.seed_runs[0])

    rows: list[dict[str, Any]] = []
    for seed_run in args.seed_runs:
        method = seed_run.name
        for refine in args.refine:
            folder = args.out / method / refine
            # the variant segmented by an earlier call keeps its segment section (its stages are then complete)
            stored = load_yaml(folder / "config.yaml") if (folder / "config.yaml").is_file() else {}
            run = variant_run(seed_run, folder, refine, {**settings, "segment": stored.get("segment")}, progress,
                              options.get(refine))
            metrics = run.run(report=False)
            maps = metrics.get("refined", metrics)
            refine_s = sum(v for k, v in metrics["timings_s"].items() if k.startswith("refine"))
            rows.append({
                "method": method, "refine": refine, "folder": str(folder), "seeds_test": metrics["test"]["miou"],
                "threshold": maps["threshold"], "val": maps["val_peak_miou"], "test": maps["test"]["miou"],
                "fp": maps["test"]["fp"], "fn": maps["test"]["fn"], "mask_train": metrics["masks"]["train"]["miou"],
                "mask_fp": metrics["masks"]["train"]["fp"], "mask_fn": metrics["masks"]["train"]["fn"],
                "seed_cost_cam_units": seed_cost_seconds(seed_run) / unit, "cost_cam_units": refine_s / unit,
            })
            print(rows[-1], flush=True)

    result: dict[str, Any] = {"seed_runs": [str(p) for p in args.seed_runs], "rows": rows, "settings": settings,
                              "cam_unit_s": unit, "protocol": PROTOCOL}
    if not args.no_segment:
        best = max(rows, key=lambda row: row["val"])
        seed_run = next(p for p in args.seed_runs if p.name == best["method"])
        segment_settings = merge(settings, {"segment": settings.get("segment") or {}})
        run = variant_run(seed_run, Path(best["folder"]), best["refine"], segment_settings, progress,
                          options.get(best["refine"]))
        # the folder's finished stages are the same with the segment section added: record the extended config
        write_text(run.layout.config, dump_yaml(run.cfg))
        metrics = run.run()
        timings = metrics["timings_s"]
        result["segmentation"] = {
            "method": best["method"], "refine": best["refine"], "test": metrics["segmentation"]["test"],
            "val": metrics["segmentation"]["val"], "ceiling_test": metrics["ceiling"]["test"],
            "ceiling_val": metrics["ceiling"]["val"],
            "ratio": metrics["segmentation"]["test"]["miou"] / metrics["ceiling"]["test"]["miou"],
            "cost_cam_units": {k: (math.nan if v is None else v / unit) for k, v in timings.items()
                               if k.startswith(("segmentation", "ceiling"))},
            "config": to_dict(run.cfg.segment),
            "loss_curves": {name: loss_curve(folder / "train_log.csv")
                            for name, folder in (("segmentation", run.layout.segment), ("ceiling", run.layout.ceiling))},
        }
    write_json(args.out / "ladder.json", result)
    table = markdown([result])
    write_text(args.out / "table.md", table)
    print(table)
    return 0


def loss_curve(log: Path) -> list[float]:
    """The mean training loss of every epoch (``train_log.csv``): the convergence curve."""
    with open(log, newline="") as handle:
        return [float(row["loss"]) for row in csv.DictReader(handle)]


def _curve_text(curve: Sequence[float]) -> str:
    """The loss at epoch 1, every tenth epoch and the last."""
    epochs = sorted({1, *range(10, len(curve) + 1, 10), len(curve)})
    return ", ".join(f"{epoch}: {curve[epoch - 1]:.3f}" for epoch in epochs)


def _cell(values: Sequence[float | None], scale: float = 100.0, digits: int = 1) -> str:
    """``mean ± std`` over seeds (just the value for one seed); a dash where a seed leaves it undefined (a cost
    of a run resumed without its timings: NaN in memory, null in ``ladder.json``)."""
    if any(value is None or math.isnan(value) for value in values):
        return "–"
    mean = statistics.fmean(values) * scale
    if len(values) < 2:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {statistics.stdev(values) * scale:.{digits}f}"


def markdown(results: Sequence[dict[str, Any]], segmentations: Sequence[dict[str, Any]] | None = None) -> str:
    """The ladder table of one or several seeds (rows matched by method and refinement; mean ± std).

    ``segmentations``: take the segmentation rungs from these ``ladder.json`` results instead (a longer
    schedule run later on each seed's chosen variant)."""
    keys = [(r.get("method", ""), r["refine"]) for r in results[0]["rows"]]
    by_key = {key: [next(r for r in res["rows"] if (r.get("method", ""), r["refine"]) == key) for res in results]
              for key in keys}
    lines = [f"{len(results)} seed(s). " + PROTOCOL + ".", "",
             "| method | refinement | seeds (test) | refined (val) | refined (test) | Δ test vs seeds | FP | FN | "
             "mask mIoU (train) | Δ mask vs unrefined | mask FP | mask FN | method cost | refinement cost |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for (method, refine), rows in by_key.items():
        unrefined = [next(r for r in res["rows"] if r.get("method", "") == method and r["refine"] == NONE)
                     for res in results] if (method, NONE) in by_key else None
        gain = _cell([r["test"] - r["seeds_test"] for r in rows])
        mask_gain = (_cell([r["mask_train"] - u["mask_train"] for r, u in zip(rows, unrefined)])
                     if unrefined else "")
        lines.append(
            f"| {method} | {refine} | {_cell([r['seeds_test'] for r in rows])} | {_cell([r['val'] for r in rows])} | "
            f"{_cell([r['test'] for r in rows])} | {gain} | {_cell([r['fp'] for r in rows], 1, 3)} | "
            f"{_cell([r['fn'] for r in rows], 1, 3)} | {_cell([r['mask_train'] for r in rows])} | {mask_gain} | "
            f"{_cell([r['mask_fp'] for r in rows], 1, 3)} | {_cell([r['mask_fn'] for r in rows], 1, 3)} | "
            f"{_cell([r.get('seed_cost_cam_units', 0.0) for r in rows], 1, 2)} | "
            f"{_cell([r['cost_cam_units'] for r in rows], 1, 2)} |")
    segs = [res["segmentation"] for res in (results if segmentations is None else segmentations)
            if "segmentation" in res]
    if segs:
        epochs = sorted({str(s.get("config", {}).get("train", {}).get("epochs", "?")) for s in segs})
        lines += ["", f"Segmentation: {len(segs)} of the {len(results)} seed(s), {'/'.join(epochs)} epochs.", "",
                  "| rung (test) | mIoU | FP | FN |", "|---|---|---|---|"]
        chosen = ", ".join(f"{s.get('method', '')} {s['refine']}".strip() for s in segs)
        lines += [
            f"| segmentation on the best-by-val pseudo masks ({chosen}) | {_cell([s['test']['miou'] for s in segs])} | "
            f"{_cell([s['test']['fp'] for s in segs], 1, 3)} | {_cell([s['test']['fn'] for s in segs], 1, 3)} |",
            f"| fully supervised ceiling | {_cell([s['ceiling_test']['miou'] for s in segs])} | "
            f"{_cell([s['ceiling_test']['fp'] for s in segs], 1, 3)} | {_cell([s['ceiling_test']['fn'] for s in segs], 1, 3)} |",
            f"| segmentation / ceiling | {_cell([s['ratio'] for s in segs])} % | | |",
            f"| (val) segmentation / ceiling | {_cell([s['val']['miou'] for s in segs])} / "
            f"{_cell([s['ceiling_val']['miou'] for s in segs])} = "
            f"{_cell([s['val']['miou'] / s['ceiling_val']['miou'] for s in segs])} % | | |",
            "", "Per seed (test, val): " + "; ".join(
                f"{s.get('method', '')} {s['refine']}: segmentation {100 * s['test']['miou']:.1f} / "
                f"{100 * s['val']['miou']:.1f}, ceiling {100 * s['ceiling_test']['miou']:.1f} / "
                f"{100 * s['ceiling_val']['miou']:.1f}, ratio {100 * s['ratio']:.1f} %" for s in segs) + "."]
        for seg in segs:
            for name, curve in seg.get("loss_curves", {}).items():
                lines.append(f"\nTraining loss of the {name} model by epoch: {_curve_text(curve)}.")
    return "\n".join(lines) + "\n"


def table(args: argparse.Namespace) -> int:
    results = [read_json(folder / "ladder.json") for folder in args.ladders]
    segmentations = ([read_json(folder / "ladder.json") for folder in args.segmentation]
                     if args.segmentation else None)
    text = markdown(results, segmentations)
    if args.single_stage:  # RecurSeed's one network on the same scenes, beside the multi-stage ladder
        import singlestage  # benchmarks/, beside this script

        text += ("\nSingle-stage runs (RecurSeed ± mixing), the same scenes and seeds:\n\n"
                 + singlestage.markdown(singlestage.group_runs(args.single_stage), None))
    if args.out is not None:
        write_text(args.out, text)
    print(text)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="refinement variants, pseudo masks, segmentation and ceiling of one seed")
    run.add_argument("seed_runs", type=Path, nargs="+", help="finished run folders with train CAMs (one per method)")
    run.add_argument("--out", type=Path, required=True)
    run.add_argument("--refine", nargs="+", default=[NONE, "pamr", "crf", "random_walk"])
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="settings of the variants' runs, e.g. segment.train.epochs=30")
    run.add_argument("--set-refine", dest="refine_overrides", action="append", default=[],
                     metavar="NAME:KEY=VALUE", help="a refiner's option, e.g. random_walk:train.epochs=3")
    run.add_argument("--no-segment", action="store_true", help="stop at the pseudo masks")
    run.add_argument("--quiet", action="store_true")
    run.set_defaults(func=run_ladder)
    tab = commands.add_parser("table", help="mean ± std over the ladder.json of several seeds")
    tab.add_argument("ladders", type=Path, nargs="+", help="`run --out` folders, one per seed")
    tab.add_argument("--segmentation", type=Path, nargs="+", metavar="LADDER",
                     help="take the segmentation rungs from these `run --out` folders (one per seed) instead")
    tab.add_argument("--single-stage", type=Path, nargs="+", default=[], metavar="RUN",
                     help="single-stage run folders (NAME-s<seed>) to add as rows (benchmarks/singlestage.py)")
    tab.add_argument("--out", type=Path, help="write the markdown here too")
    tab.set_defaults(func=table)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
