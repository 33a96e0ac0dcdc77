"""Why ReCAM needs non-negative features: its map on a trained ReCAM classifier, with and without them.

    HF_HUB_OFFLINE=1 python benchmarks/recam_feature_sign.py runs/compare/seed0/recam [more recam run folders]

ReCAM's CAM is ``Σ_d (W_recam ⊙ W_cls)[c, d] · F_d``. On ResNet-50's post-ReLU layer4 (the paper's backbone)
F ≥ 0, so the product keeps a feature when both classifiers call it evidence *for* class c. On a signed
feature map (EfficientNet's last stage is a linear bottleneck) a feature that both call evidence *against* c
(two negative weights) gets a positive product and lights wherever it is present. For each run folder this
prints, on the **val** split at scale 1 (no test data is read): the fraction of negative feature values, and
the val Peak mIoU of the CAM of W_cls, of ReCAM's product map, and of the product map on relu(F) — the
control that removes only the sign problem.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="pipeline run folders trained with objective 'recam'")
    args = parser.parse_args(argv)

    import scarce.methods  # noqa: F401  (registers the recam objective)
    from scarce.cams import CamConfig, CamExtractor, CamMethod
    from scarce.metrics.segmentation import ThresholdSweep
    from scarce.layout import RunLayout
    from scarce.pipeline import Run, load_run_config
    from scarce.training import load_trained, to_tensor

    class FixedWeights(CamMethod):
        """CAM with a given (C, D) weight matrix, optionally on relu(F)."""

        def __init__(self, cfg: CamConfig, weights: torch.Tensor, relu_features: bool) -> None:
            super().__init__(cfg)
            self.weights, self.relu_features = weights, relu_features

        def __call__(self, model, images, classes=None):
            features = model.features(images)
            features = features.clamp_min(0.0) if self.relu_features else features
            weights = self.weights if classes is None else self.weights[list(classes)]
            return torch.einsum("cd,bdhw->bchw", weights, features)

    print("| run | feature layer | negative feature values | CAM (W_cls) | ReCAM (W_recam ⊙ W_cls) | ReCAM on relu(F) |")
    print("|---|---|---|---|---|---|")
    for folder in args.runs:
        run = Run(load_run_config(RunLayout(folder).config), folder, progress=False)
        val = run.dataset(run.cfg.data.val_split)
        model, objective = run.build_model(val.num_classes)
        load_trained(model, run.model_path, objective)
        model.eval()
        w_cls = model.class_weights.detach()
        w_recam = objective.head.weight.detach()
        cfg = CamConfig(scales=(1.0,), flip=False)
        images = torch.stack([to_tensor(val.load_image(s), model.mean_std) for s in val.samples])
        with torch.no_grad():
            negative = float((model.features(images[:32]) < 0).float().mean())
        peaks = []
        for weights, relu in ((w_cls, False), (w_recam * w_cls, False), (w_recam * w_cls, True)):
            extractor = CamExtractor(model, cfg, FixedWeights(cfg, weights, relu))
            sweep = ThresholdSweep(val.num_classes + 1, np.round(np.arange(0.0, 1.0, 0.01), 6))
            with torch.no_grad():
                for start in range(0, len(val.samples), 16):
                    maps = extractor(images[start : start + 16])
                    for i, sample in enumerate(val.samples[start : start + 16]):
                        sweep.update(maps[i, list(sample.labels)].numpy(), list(sample.labels), val.load_mask(sample))
            peaks.append(100 * sweep.compute()["best_miou"])
        print(f"| {folder} | {run.cfg.model.feature_layer} | {100 * negative:.1f} % | "
              + " | ".join(f"{p:.1f}" for p in peaks) + " |")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
