"""Diagnostic for a finished single-stage run: how much ground-truth foreground the mixing labels keep.

EdgePredictMix labels a mixed image with CF(M_ep), EP's superpixel map of the refined decoder output; CutMix and
ClassMix (as scarce runs them) label it with CF(M_dec), the refined decoder output itself. Both come from the same
trained network here, on every train image (whole image, one scale, no augmentation, the image's own classes),
built by the training objective's own ``mix_masks``. Counted over all train pixels against the ground truth:

- of the ground-truth foreground: labelled with its class / labelled background / another class / ignored (255);
- of the pixels labelled foreground: the fraction whose class is right (precision);
- EP's pasted region M_fg: its area over the ground-truth foreground's, and the foreground fraction it covers.

It reads train ground truth, so it explains a result and chooses nothing. Writes nothing into the run folder.

    python benchmarks/mix_labels.py runs/rs_mix/rs_epm-s0
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np
import torch

from scarce.singlestage import SingleStageRun, load_config
from scarce.singlestage.objective import SingleStageObjective
from scarce.singlestage.recurseed import class_keys, to_rgb
from scarce.training import to_tensor

IGNORE = 255


def label_counts(labels: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """[gt fg: right class, background, other class, ignored; labelled fg; labelled fg right] pixel counts."""
    scored = truth != IGNORE
    fg = scored & (truth > 0)
    labelled = scored & (labels != IGNORE) & (labels > 0)
    right = labels == truth
    return np.array([(fg & right).sum(), (fg & (labels == 0)).sum(),
                     (fg & (labels != IGNORE) & (labels > 0) & ~right).sum(), (fg & (labels == IGNORE)).sum(),
                     labelled.sum(), (labelled & right).sum()], dtype=np.int64)


def fractions(counts: dict[str, np.ndarray], fg_area: np.ndarray) -> dict[str, dict[str, float]]:
    """The printed fractions from the summed ``label_counts`` and EP's region areas; a split without foreground
    gives zeros, not NaN."""
    table = {}
    for name, (right, background, other, ignored, labelled, labelled_right) in counts.items():
        total = max(right + background + other + ignored, 1)
        table[name] = {"gt fg labelled right": right / total, "gt fg labelled background": background / total,
                       "gt fg labelled another class": other / total, "gt fg ignored (255)": ignored / total,
                       "precision of fg labels": labelled_right / max(labelled, 1)}
    gt_fg_area = max(fg_area[1], 1)
    table["M_fg (EP's pasted region)"] = {"area / gt fg area": fg_area[0] / gt_fg_area,
                                          "gt fg inside M_fg": fg_area[2] / gt_fg_area}
    return table


def measure(run_dir: Path) -> dict[str, dict[str, float]]:
    run = SingleStageRun(load_config(run_dir / "config.yaml"), run_dir, progress=False)
    net = run.trained()
    cfg = run.cfg
    dataset = run.dataset(cfg.data.train_split)
    sources = {name: SingleStageObjective(cfg.recurseed, dataclasses.replace(cfg.mix, kind=kind), cfg.train.epochs)
               for name, kind in (("CF(M_ep), EdgePredictMix", "epm"), ("CF(M_dec), CutMix / ClassMix", "cutmix"))}
    counts = {name: np.zeros(6, dtype=np.int64) for name in sources}
    fg_area = np.zeros(3, dtype=np.int64)  # M_fg pixels, gt fg pixels, gt fg pixels inside M_fg
    with torch.no_grad():
        for sample in dataset.samples:
            image = to_tensor(dataset.load_image(sample), net.mean_std)[None]
            out = net(image)
            keys = class_keys(torch.from_numpy(dataset.label_vector(sample))[None])
            rgb = to_rgb(image, net.mean_std)
            truth = dataset.load_mask(sample)
            for name, objective in sources.items():
                region, labels = objective.mix_masks(rgb, out.seg_logits, keys)
                counts[name] += label_counts(labels[0].numpy(), truth)
                if objective.mixing.kind == "epm":
                    inside, gt_fg = region[0].numpy() > 0, (truth > 0) & (truth != IGNORE)
                    fg_area += [inside.sum(), gt_fg.sum(), (inside & gt_fg).sum()]
    return fractions(counts, fg_area)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", type=Path, nargs="+", help="finished single-stage run folders")
    args = parser.parse_args(argv)
    for run_dir in args.runs:
        print(f"{run_dir} (train, {load_config(run_dir / 'config.yaml').data.train_split} ground truth)")
        for name, values in measure(run_dir).items():
            print(f"  {name}: " + ", ".join(f"{key} {value:.3f}" for key, value in values.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
