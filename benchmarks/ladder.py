"""The WSSS ladder on finished seed runs: refinements × pseudo masks, then a segmentation model and its ceiling.

For each seed run (a folder made by ``scarce run`` with train CAMs, i.e. ``eval.mask_splits`` including
train), every refinement variant is run in its own folder that shares the run's classifier and CAMs (hard
links, so nothing is recomputed): refine → threshold chosen on val → pseudo masks of train (scored against
the train ground truth, "mask mIoU (train)") and test. The segmentation model is then trained on the train
masks of the variant with the best **val** mIoU of its refined maps (never chosen on test or on the train
ground truth), and the fully supervised ceiling on the train ground truth, both with the same recipe and
scored on test. Costs are in CAM units: seconds of a stage divided by the seconds the CAM classifier took to
train in the same run.

    python benchmarks/ladder.py runs/ladder/seed0 --out runs/ladder/seed0_variants \\
        --refine none pamr crf random_walk --set segment.train.epochs=30

Prints a markdown table and writes ``ladder.json`` and ``table.md`` into ``--out``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from scarce.config import dump_yaml, load_yaml, merge, parse_overrides, to_dict
from scarce.io import read_json, write_json, write_text
from scarce.layout import RunLayout
from scarce.pipeline import Run, load_run_config

NONE = "none"


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


def variant_run(seed_run: Path, folder: Path, refine: str, settings: dict[str, Any], progress: bool,
                options: dict[str, Any] | None = None) -> Run:
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
    return Run(cfg, folder, progress=progress)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("seed_run", type=Path, help="a finished `scarce run` folder with train CAMs")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--refine", nargs="+", default=[NONE, "pamr", "crf", "random_walk"])
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="settings of the variants' runs, e.g. segment.train.epochs=30")
    parser.add_argument("--set-refine", dest="refine_overrides", action="append", default=[],
                        metavar="NAME:KEY=VALUE", help="a refiner's option, e.g. random_walk:train.epochs=3")
    parser.add_argument("--no-segment", action="store_true", help="stop at the pseudo masks")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    settings = parse_overrides(args.overrides)
    per_refiner: dict[str, list[str]] = {}
    for item in args.refine_overrides:
        name, _, setting = item.partition(":")
        per_refiner.setdefault(name, []).append(setting)
    options = {name: parse_overrides(items) for name, items in per_refiner.items()}
    progress = not args.quiet
    train_seconds = read_json(RunLayout(args.seed_run).timings)["train"]

    rows: list[dict[str, Any]] = []
    for refine in args.refine:
        run = variant_run(args.seed_run, args.out / refine, refine, {**settings, "segment": None}, progress,
                          options.get(refine))
        metrics = run.run(report=False)
        maps = metrics.get("refined", metrics)
        timings = metrics["timings_s"]
        refine_s = sum(v for k, v in timings.items() if k.startswith("refine"))
        rows.append({
            "refine": refine, "seeds_test": metrics["test"]["miou"], "threshold": maps["threshold"],
            "val": maps["val_peak_miou"], "test": maps["test"]["miou"], "fp": maps["test"]["fp"],
            "fn": maps["test"]["fn"], "mask_train": metrics["masks"]["train"]["miou"],
            "mask_fp": metrics["masks"]["train"]["fp"], "mask_fn": metrics["masks"]["train"]["fn"],
            "cost_cam_units": refine_s / train_seconds,
        })
        print(rows[-1], flush=True)

    result: dict[str, Any] = {"seed_run": str(args.seed_run), "rows": rows, "settings": settings,
                              "protocol": "thresholds chosen on val; refined maps and segmentation scored on test; "
                                          "masks scored on train; the variant segmented is the best by val mIoU"}
    if not args.no_segment:
        best = max(rows, key=lambda row: row["val"])
        segment_settings = merge(settings, {"segment": settings.get("segment") or {}})
        run = variant_run(args.seed_run, args.out / best["refine"], best["refine"], segment_settings, progress,
                          options.get(best["refine"]))
        # the folder's finished stages are the same with the segment section added: record the extended config
        write_text(run.layout.config, dump_yaml(run.cfg))
        metrics = run.run()
        timings = metrics["timings_s"]
        result["segmentation"] = {
            "refine": best["refine"], "test": metrics["segmentation"]["test"], "val": metrics["segmentation"]["val"],
            "ceiling_test": metrics["ceiling"]["test"], "ceiling_val": metrics["ceiling"]["val"],
            "ratio": metrics["segmentation"]["test"]["miou"] / metrics["ceiling"]["test"]["miou"],
            "cost_cam_units": {k: v / train_seconds for k, v in timings.items() if k.startswith(("segmentation", "ceiling"))},
            "config": to_dict(run.cfg.segment),
        }
    write_json(args.out / "ladder.json", result)
    table = markdown(result)
    write_text(args.out / "table.md", table)
    print(table)
    return 0


def markdown(result: dict[str, Any]) -> str:
    lines = ["| refinement | seeds (test) | refined (val) | refined (test) | FP | FN | mask mIoU (train) | mask FP | mask FN "
             "| cost (CAM units) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['refine']} | {100 * r['seeds_test']:.1f} | {100 * r['val']:.1f} | {100 * r['test']:.1f} | "
                     f"{r['fp']:.3f} | {r['fn']:.3f} | {100 * r['mask_train']:.1f} | {r['mask_fp']:.3f} | "
                     f"{r['mask_fn']:.3f} | {r['cost_cam_units']:.2f} |")
    seg = result.get("segmentation")
    if seg:
        lines += ["", f"Segmentation on the train masks of `{seg['refine']}` (best refined val mIoU): test "
                      f"{100 * seg['test']['miou']:.1f} (val {100 * seg['val']['miou']:.1f}); fully supervised ceiling "
                      f"test {100 * seg['ceiling_test']['miou']:.1f} (val {100 * seg['ceiling_val']['miou']:.1f}); "
                      f"weak / full = {100 * seg['ratio']:.1f} %."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
