"""Diagnostic for a finished single-stage run: its decoder on val and test restricted to each image's true labels.

The single-stage protocol lets the classification branch choose the classes (σ(GAP) ≥ ``infer.class_threshold``);
with the labels given instead, what remains is the decoder's masks. The difference is what class recognition
costs. It reads ground-truth image labels of the scored split, so it is a diagnostic, never a result to compare
methods with. Writes nothing into the run folder.

    python benchmarks/singlestage_label_oracle.py runs/rs/rs-s0
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from scarce.singlestage import SingleStageRun, load_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a finished single-stage run folder")
    args = parser.parse_args(argv)
    run = SingleStageRun(load_config(args.run / "config.yaml"), args.run, progress=False)
    net = run.trained()
    for split in (run.cfg.data.val_split, run.cfg.data.test_split):
        with tempfile.TemporaryDirectory() as scratch:
            scores = run.label_split(net, split, Path(scratch), image_labels=True)
        print(f"{split}: decoder on the true image labels: mIoU {100 * scores['miou']:.2f}  FP {scores['fp']:.3f}  "
              f"FN {scores['fn']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
