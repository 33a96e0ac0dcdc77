"""The fully supervised model of a finished run at another learning rate or schedule: is the ceiling converged?

Trains the run's segmentation recipe on the ground-truth train masks with ``--set`` overrides into ``--out``,
scores it on val and test (multi-scale + flip, as the pipeline), and reports how well it fits its own training
masks (train mIoU at one scale): a model far below 100 there is under-trained, not limited by the data.

    python benchmarks/ceiling_probe.py runs/l0 --out runs/exp/ceil_lr01 --set segment.train.lr=0.01
    python benchmarks/ceiling_probe.py runs/ladder3/seed0_ladder/recam/crf --out runs/exp/ceil120 --set segment.train.epochs=120

Choose settings on val; test is printed for the record.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from scarce.config import merge, parse_overrides
from scarce.layout import RunLayout
from scarce.pipeline import Run, load_run_config
from segment_fit import train_fit  # benchmarks/, beside this script


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a finished `scarce run` folder (its data and config are reused)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="e.g. segment.train.lr=0.01 or segment.train.epochs=60")
    args = parser.parse_args(argv)
    root = RunLayout(args.run)
    # A run that generated its scenes keeps them in RUN/data; a ladder variant points at its method run's.
    own_data = {"data": {"root": str((args.run / "data").resolve())}} if (args.run / "data").is_dir() else {}
    changes = merge({**own_data, "segment": {}}, parse_overrides(args.overrides))
    cfg = load_run_config(root.config, changes)
    run = Run(cfg, args.out, progress=False)
    run.ceiling()
    scores = run.read_scores("ceiling")
    fit = train_fit(run, run.layout.ceiling)
    for name, score in (("train fit (1 scale)", fit), ("val", scores["val"]), ("test", scores["test"])):
        print(f"{name}: mIoU {100 * score['miou']:.1f}  FP {score['fp']:.3f}  FN {score['fn']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
