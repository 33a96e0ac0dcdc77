"""How well a run's segmentation model and ceiling fit what they were trained on (train split, one scale).

A model that scores far below its own training masks is under-trained; one that fits them but scores below
them on test generalises worse than the masks (it learnt their errors, or its own).

    python benchmarks/segment_fit.py runs/ladder3/seed0_ladder/recam/crf

Prints, for ``segment/`` (if trained): mIoU against its pseudo masks of train and against the train ground
truth; for ``ceiling/`` (if trained): mIoU against the train ground truth.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

from scarce.pipeline import Run, load_run_config
from scarce.segmentation import GROUND_TRUTH, load_segmenter
from scarce.segmentation.data import MaskSource, mask_dataset
from scarce.segmentation.predict import evaluate_split


def train_fit(run: Run, model_folder: Path, masks: MaskSource = GROUND_TRUTH) -> dict[str, Any]:
    """Scores (one scale, no flip) of the model in ``model_folder`` on the run's train split against ``masks``."""
    train = run.dataset(run.cfg.data.train_split)
    one_scale = dataclasses.replace(run.cfg.segment, scales=(1.0,), flip=False)
    model = load_segmenter(one_scale, train.num_classes, model_folder / "model.pt")
    return evaluate_split(model, mask_dataset(train, masks), one_scale, progress=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a run folder with a segment: section and trained models")
    args = parser.parse_args(argv)
    run = Run(load_run_config(args.run / "config.yaml"), args.run, progress=False)
    train_split = run.cfg.data.train_split
    targets = {"segment": {"its pseudo masks": run.layout.masks(train_split), "the ground truth": GROUND_TRUTH},
               "ceiling": {"the ground truth": GROUND_TRUTH}}
    for name, folder in (("segment", run.layout.segment), ("ceiling", run.layout.ceiling)):
        if not (folder / "model.pt").is_file():
            continue
        for what, masks in targets[name].items():
            score = train_fit(run, folder, masks)
            print(f"{name} on {train_split} against {what}: mIoU {100 * score['miou']:.1f}  "
                  f"FP {score['fp']:.3f}  FN {score['fn']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
