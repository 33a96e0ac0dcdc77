"""CAM speed on CPU, as ratios measured in one process on the same model and the same images.

(a) scarce's all-class multi-scale+flip CAMs / the bare forward passes at the same scales (target ≤ 1.15):
    the CAM should cost little more than the forward passes it cannot avoid.
(b) peer time / scarce time for the same maps (target ≥ 5), each peer used the way it works: one call
    per positive class, per scale and per flip. pytorch-grad-cam (GradCAM: a forward and a backward per
    call; on a GAP → linear head it equals CAM up to a constant) and torchcam (CAM: a forward per call;
    also timed with one forward shared by all classes of a scale, its best case).

Usage: python benchmarks/cam_speed.py [--images 8] [--repeats 3] [--models resnet50 tf_efficientnet_lite0]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch
import torch.nn.functional as F

from scarce.cams import CamConfig, CamExtractor
from scarce.data.base import open_dataset
from scarce.data.scenes import ScenesConfig, generate_scenes
from scarce.models import ModelConfig, build_classifier
from scarce.models.classifier import feature_module_name
from scarce.training import to_tensor

SCALES = (1.0, 0.5, 1.5, 2.0)


def scaled(images: torch.Tensor, scale: float) -> torch.Tensor:
    h, w = images.shape[-2:]
    if scale == 1.0:
        return images
    return F.interpolate(images, size=(round(h * scale), round(w * scale)), mode="bilinear", align_corners=False)


def time_interleaved(fns: dict, repeats: int) -> dict[str, float]:
    """Median time of each function, runs interleaved (A B C A B C ...) so that a load change on the machine
    hits every contender alike; one warm-up round first (allocator, oneDNN kernels)."""
    runs: dict[str, list[float]] = {name: [] for name in fns}
    for round_ in range(repeats + 1):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            if round_:
                runs[name].append(time.perf_counter() - start)
    return {name: statistics.median(times) for name, times in runs.items()}


def bare_forward(model, images: torch.Tensor) -> None:
    with torch.no_grad():
        for s in SCALES:
            x = scaled(images, s)
            model(torch.cat([x, x.flip(-1)]))


def scarce_cams(extractor: CamExtractor, images: torch.Tensor, classes: list[list[int]]) -> None:
    wanted = sorted({c for cls in classes for c in cls})
    with torch.no_grad():
        extractor(images, wanted)


def gradcam_peer(model, layer, images: torch.Tensor, classes: list[list[int]]) -> None:
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    size = images.shape[-2:]
    with GradCAM(model=model, target_layers=[layer]) as cam:
        for image, positives in zip(images, classes):
            for c in positives:
                total = np.zeros(size, np.float32)
                for s in SCALES:
                    x = scaled(image[None], s)
                    for variant, flipped in ((x, False), (x.flip(-1), True)):
                        grayscale = cam(input_tensor=variant, targets=[ClassifierOutputTarget(c)])[0]
                        m = torch.from_numpy(grayscale)[None, None]
                        m = m.flip(-1) if flipped else m
                        total += F.interpolate(m, size=size, mode="bilinear", align_corners=False)[0, 0].numpy()


def torchcam_peer(model, layer_name: str, images: torch.Tensor, classes: list[list[int]], shared: bool) -> None:
    from torchcam.methods import CAM

    size = images.shape[-2:]
    with CAM(model, target_layer=layer_name, fc_layer="classifier", input_shape=tuple(images.shape[1:])) as extractor:
        with torch.no_grad():
            for image, positives in zip(images, classes):
                totals = {c: torch.zeros(size) for c in positives}
                for s in SCALES:
                    x = scaled(image[None], s)
                    for variant, flipped in ((x, False), (x.flip(-1), True)):
                        scores = model(variant) if shared else None
                        for c in positives:
                            if not shared:
                                scores = model(variant)
                            m = extractor(c, scores, normalized=False)[0].relu()[None]
                            m = m.flip(-1) if flipped else m
                            totals[c] += F.interpolate(m, size=size, mode="bilinear", align_corners=False)[0, 0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds after one warm-up round")
    parser.add_argument("--models", nargs="+", default=["resnet50", "tf_efficientnet_lite0"])
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        generate_scenes(ScenesConfig(n=max(40, 5 * args.images), seed=0, image_size=160), Path(tmp), progress=False)
        data = open_dataset("scenes", tmp, "test")
        samples = data.samples[: args.images]
        raw = [data.load_image(s) for s in samples]
        classes = [list(s.labels) for s in samples]
    n_pos = sum(map(len, classes))
    print(f"{len(samples)} scenes images 160x160, {n_pos} positive classes, scales {SCALES} + flip, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, median of {args.repeats}")
    header = f"{'model':24s} {'forward s':>9s} {'scarce s':>9s} {'(a) ratio':>9s} {'grad-cam s':>10s} {'(b) gc/sc':>9s} " \
             f"{'torchcam s':>10s} {'(b) tc/sc':>9s} {'tc shared/sc':>12s}"
    print(header)
    for name in args.models:
        model = build_classifier(ModelConfig(backbone=name, pretrained="auto" if name == "tf_efficientnet_lite0" else None),
                                 num_classes=10).eval()
        images = torch.stack([to_tensor(r, model.mean_std) for r in raw])
        extractor = CamExtractor(model, CamConfig(scales=SCALES, flip=True))
        layer_name = feature_module_name(model)
        layer = dict(model.named_modules())[layer_name]
        t = time_interleaved({
            "forward": lambda: bare_forward(model, images),
            "scarce": lambda: scarce_cams(extractor, images, classes),
            "gradcam": lambda: gradcam_peer(model, layer, images, classes),
            "torchcam": lambda: torchcam_peer(model, layer_name, images, classes, shared=False),
            "torchcam_shared": lambda: torchcam_peer(model, layer_name, images, classes, shared=True),
        }, args.repeats)
        t_fwd, t_ours, t_gc, t_tc, t_tcs = (t[k] for k in ("forward", "scarce", "gradcam", "torchcam", "torchcam_shared"))
        print(f"{name:24s} {t_fwd:9.3f} {t_ours:9.3f} {t_ours / t_fwd:9.3f} {t_gc:10.3f} {t_gc / t_ours:9.2f} "
              f"{t_tc:10.3f} {t_tc / t_ours:9.2f} {t_tcs / t_ours:12.2f}")
        sys.stdout.flush()
    print("targets: (a) <= 1.15; (b) >= 5 (peer time / scarce time)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
