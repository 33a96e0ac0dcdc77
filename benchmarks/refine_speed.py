"""Refiner speed on CPU, as ratios measured in one process on the same images.

(a) PAMR's and SCG's time per image / one classifier forward per image (tf_efficientnet_lite0, output stride 16),
    at 128 px (the scenes) and 320 px. SCG's time includes the forward pass that reads its features.
(b) dense CRF images per second with 1 and 2 worker processes (the pool is started in the warm-up round).

Each image carries 2 class maps. Weights are random (pretrained: null): the timings do not depend on them.

Usage: python benchmarks/refine_speed.py [--images 8] [--repeats 3] [--sizes 128 320]
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from cam_speed import time_interleaved  # the same interleaved median timing as the CAM benchmark
from scarce.models import ModelConfig, build_classifier
from scarce.refinement import RefineContext, build_refiner
from scarce.refinement.base import RefineStep


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds after one warm-up round")
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 320])
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    model = build_classifier(ModelConfig(pretrained=None), num_classes=10).eval()
    context = RefineContext(model=model, datasets=None, cam_dir=None, work_dir=None, threshold=0.5)
    pamr, scg = build_refiner("pamr"), build_refiner("scg")
    scg.prepare(context)
    crf = {workers: build_refiner(RefineStep("crf", {"workers": workers})) for workers in (1, 2)}
    for refiner in crf.values():
        refiner.prepare(context)
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in model.mean_std)
    print(f"{args.images} images x 2 class maps, torch threads {torch.get_num_threads()}, "
          f"median of {args.repeats} rounds")
    print(f"{'size':>5} {'forward/img s':>14} {'PAMR/img s':>11} {'PAMR/fwd':>9} {'SCG/img s':>10} {'SCG/fwd':>8} "
          f"{'CRF 1 proc img/s':>17} {'CRF 2 proc img/s':>17}")
    for size in args.sizes:
        images = torch.rand(args.images, 3, size, size)
        cams = [torch.rand(2, size, size) for _ in range(args.images)]
        keys = [[0, 1]] * args.images

        def forward() -> None:
            with torch.no_grad():
                model((images - mean) / std)

        times = time_interleaved({
            "forward": forward,
            "pamr": lambda: pamr(images, cams, keys),
            "scg": lambda: scg(images, cams, keys),
            "crf1": lambda: crf[1](images, cams, keys),
            "crf2": lambda: crf[2](images, cams, keys),
        }, args.repeats)
        per_image = {name: t / args.images for name, t in times.items()}
        print(f"{size:>5} {per_image['forward']:>14.4f} {per_image['pamr']:>11.4f} "
              f"{per_image['pamr'] / per_image['forward']:>9.2f} {per_image['scg']:>10.4f} "
              f"{per_image['scg'] / per_image['forward']:>8.2f} {1 / per_image['crf1']:>17.1f} "
              f"{1 / per_image['crf2']:>17.1f}")
    crf[2].close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
