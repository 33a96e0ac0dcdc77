"""Scaling from 1 to N processes (torchrun): classifier-training and CAM throughput, and their efficiency.

For each process count N the script launches ``torchrun --nproc-per-node N`` on itself; every rank trains
the same classifier (``scarce.training.train_classifier``, global batch ``--batch`` split over the ranks)
and extracts the CAMs of the training split (``scarce.pipeline.extract_cams``, batches dealt round-robin), exactly
the code ``scarce run`` executes. Rank 0 reports:

- train images/s: images of the steps after the first (the first pays one-off costs), over their time;
- CAM images/s: the split's images over the extraction's time (all ranks done);
- efficiency: throughput with N processes / (N × throughput with 1);
- CPU s/img: the CPU time of all ranks per image, and the work efficiency CPU s/img with 1 / with N. On a
  machine whose cores other jobs share, wall-clock scaling measures the contention; the CPU time spent per
  image still shows what the extra processes cost (communication, work every rank repeats).

On a CPU each process gets ``--threads`` torch threads (1: one core per process, the fair comparison);
with ``--device auto`` on a GPU machine each process takes its own GPU (``cuda:LOCAL_RANK``).

Usage: python benchmarks/ddp_scaling.py [--processes 1 2] [--scenes 64] [--size 64] [--batch 8] [--cam-batch 4]
                                        [--backbone tf_efficientnet_lite0] [--device cpu] [--amp none]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def worker(args: argparse.Namespace) -> None:
    """One rank: train, then extract; rank 0 writes the timings to ``args.result``."""
    import torch

    from scarce.cams import CamConfig
    from scarce.data.base import open_dataset
    from scarce.distributed import all_sum, barrier, session
    from scarce.models import ModelConfig, build_classifier
    from scarce.pipeline import extract_cams
    from scarce.training import AugmentConfig, TrainConfig, train_classifier

    torch.set_num_threads(args.threads)
    with session() as ranks:
        data = open_dataset("scenes", args.data, "train")
        torch.manual_seed(0)
        model = build_classifier(ModelConfig(backbone=args.backbone, pretrained=None), data.num_classes)
        cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch, augment=AugmentConfig(crop_size=args.size),
                          device=args.device, amp=args.amp, channels_last=args.device != "cpu",
                          pin_memory=args.device != "cpu")
        marks: list[tuple[float, float]] = []  # (wall, this process's CPU) after each step
        train_classifier(model, data, cfg, args.out / "train", progress=False,
                         on_step=lambda epoch, step: marks.append((time.perf_counter(), time.process_time())))
        steps = len(marks)
        split = data  # the largest split: batches of the CAM stage spread evenly over the ranks
        cams = CamConfig(scales=tuple(args.cam_scales), batch_size=args.cam_batch)
        barrier()
        start, cpu_start = time.perf_counter(), time.process_time()
        extract_cams(model.eval(), split, cams, args.out / "cams", progress=False)
        cam_cpu = time.process_time() - cpu_start
        barrier()
        cam_seconds = time.perf_counter() - start
        cpu = all_sum(torch.tensor([marks[-1][1] - marks[0][1], cam_cpu], dtype=torch.float64)).tolist()
        if ranks.is_main:
            n = len(data.samples)
            sizes = [min(args.batch, n - i) for _ in range(args.epochs) for i in range(0, n, args.batch)]
            images = sum(sizes[1:steps])  # the images of the timed steps (all but the first)
            args.result.write_text(json.dumps({
                "processes": ranks.size, "train_steps_timed": steps - 1,
                "train_images_per_s": images / (marks[-1][0] - marks[0][0]), "train_cpu_s_per_image": cpu[0] / images,
                "cam_images": len(split.samples), "cam_images_per_s": len(split.samples) / cam_seconds,
                "cam_cpu_s_per_image": cpu[1] / len(split.samples)}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--scenes", type=int, default=64, help="scenes generated (60 %% train, 20 %% val)")
    parser.add_argument("--size", type=int, default=64, help="scene and crop size in pixels")
    parser.add_argument("--batch", type=int, default=8, help="global batch (training and CAMs)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--cam-scales", type=float, nargs="+", default=[1.0, 0.5], help="CAM scales (+ flip)")
    parser.add_argument("--cam-batch", type=int, default=4, help="CAM batch (whole batches go to the ranks)")
    parser.add_argument("--backbone", default="tf_efficientnet_lite0")
    parser.add_argument("--device", default="cpu", help="cpu | auto | cuda")
    parser.add_argument("--amp", default="none", help="none | bf16 | fp16")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        args.out = args.result.parent / "run"
        worker(args)
        return 0

    from scarce.data.scenes import ScenesConfig, generate_scenes

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "scenes"
        generate_scenes(ScenesConfig(n=args.scenes, seed=0, image_size=args.size, subset=True), data, progress=False)
        rows = []
        for n in args.processes:
            folder = Path(tmp) / f"n{n}"
            folder.mkdir()
            command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(n), "--master-port",
                       str(29500 + n), __file__, "--worker", "--data", str(data), "--result", str(folder / "result.json"),
                       *sum(([f"--{k.replace('_', '-')}", str(getattr(args, k))] for k in
                             ("size", "batch", "epochs", "backbone", "device", "amp", "threads", "cam_batch")),
                           []),
                       "--cam-scales", *map(str, args.cam_scales)]
            subprocess.run(command, check=True, env={**os.environ, "OMP_NUM_THREADS": str(args.threads)})
            rows.append(json.loads((folder / "result.json").read_text()))
    base = rows[0]
    for row in rows:
        scale = row["processes"] / base["processes"]
        row["train_efficiency"] = row["train_images_per_s"] / (scale * base["train_images_per_s"])
        row["cam_efficiency"] = row["cam_images_per_s"] / (scale * base["cam_images_per_s"])
        row["train_work_efficiency"] = base["train_cpu_s_per_image"] / row["train_cpu_s_per_image"]
        row["cam_work_efficiency"] = base["cam_cpu_s_per_image"] / row["cam_cpu_s_per_image"]
    print(f"{'processes':>9} {'train img/s':>11} {'eff.':>5} {'CPU s/img':>9} {'work eff.':>9} "
          f"{'CAM img/s':>9} {'eff.':>5} {'CPU s/img':>9} {'work eff.':>9}")
    for row in rows:
        print(f"{row['processes']:9d} {row['train_images_per_s']:11.2f} {row['train_efficiency']:5.2f} "
              f"{row['train_cpu_s_per_image']:9.3f} {row['train_work_efficiency']:9.2f} {row['cam_images_per_s']:9.2f} "
              f"{row['cam_efficiency']:5.2f} {row['cam_cpu_s_per_image']:9.3f} {row['cam_work_efficiency']:9.2f}")
    if args.out:
        args.out.write_text(json.dumps({"settings": {k: str(v) for k, v in vars(args).items()
                                                     if k not in ("worker", "data", "result", "out")},
                                        "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
