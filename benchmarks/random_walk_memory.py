"""Peak memory of the random walk: neighbourhood sums (scarce) against IRN's dense (HW)² transition matrix.

One process, one 512×512 input at stride 4 (128×128 = 16,384 nodes), IRN's settings (radius 5, β 10,
exp_times 8 → t = 256), the same affinities for both. Memory is the growth of the process's peak resident
set over its resident set before each walk (Linux: the high-water mark is reset through
``/proc/self/clear_refs`` and read from ``VmHWM``), with glibc's malloc told to map every block over 64 KiB
on its own, so that a freed tensor leaves the resident set and the next one is counted again.

The dense walk builds the (HW)² matrix as IRN does (affinities scattered into it, ``A^β``, divided by the
column sums) and applies it ``t`` times to the maps as row vectors, instead of IRN's eight squarings: the
product is the same, the squarings cost 8 × 2 × 16,384³ ≈ 7·10¹³ flops (hours on one CPU core), and they
hold at least two such matrices at once, so IRN's own peak is at least this dense figure.

Target (issue 11): neighbourhood peak ≤ 1/20 of the dense one, same output (max abs difference reported).

Usage: python benchmarks/random_walk_memory.py [--size 512] [--classes 3] [--dim 16]
"""

from __future__ import annotations

import argparse
import ctypes
import re
import time

import torch

from scarce.refinement.affinity import STRIDE, disc_offsets, pair_affinities
from scarce.refinement.random_walk import random_walk

M_MMAP_THRESHOLD = -3  # glibc mallopt parameter


def reset_peak() -> int:
    """Reset the peak resident set to the current one; return it in bytes."""
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")
    return read_status("VmHWM")


def read_status(field: str) -> int:
    with open("/proc/self/status") as handle:
        return int(re.search(rf"{field}:\s+(\d+) kB", handle.read()).group(1)) * 1024


def measured(fn, *args):
    """(result, peak resident-set growth in bytes, seconds) of ``fn(*args)``."""
    before = reset_peak()
    start = time.perf_counter()
    result = fn(*args)
    seconds = time.perf_counter() - start
    return result, read_status("VmHWM") - before, seconds


def dense_walk(cams: torch.Tensor, affinities: torch.Tensor, radius: int, beta: float, exp_times: int) -> torch.Tensor:
    """IRN's dense transition matrix, built from the same neighbourhood affinities, applied t times
    (one image: cams (1, K, h, w), affinities (1, len(offsets), h, w))."""
    _, classes, height, width = cams.shape
    n = height * width
    matrix = torch.zeros(n, n)
    index = torch.arange(n).view(height, width)
    for plane, (dy, dx) in zip(affinities[0], disc_offsets(radius)):
        rows = index[max(0, -dy):height - max(0, dy), max(0, -dx):width - max(0, dx)].reshape(-1)
        cols = index[max(0, dy):height + min(0, dy), max(0, dx):width + min(0, dx)].reshape(-1)
        matrix[rows, cols] = plane.reshape(-1)[rows]
    matrix.pow_(beta)
    matrix.div_(matrix.sum(dim=0, keepdim=True))  # IRN: column sums
    x = cams.reshape(classes, n)
    for _ in range(2 ** exp_times):
        x = x @ matrix
    return x.view(1, classes, height, width)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=512, help="input side in pixels (stride 4 → size/4 nodes a side)")
    parser.add_argument("--classes", type=int, default=3, help="maps walked (the scenes hold up to 3 classes)")
    parser.add_argument("--dim", type=int, default=16, help="embedding channels")
    parser.add_argument("--radius", type=int, default=5)
    parser.add_argument("--beta", type=float, default=10.0)
    parser.add_argument("--exp-times", type=int, default=8)
    args = parser.parse_args()
    ctypes.CDLL("libc.so.6").mallopt(M_MMAP_THRESHOLD, 64 * 1024)
    torch.manual_seed(0)
    side = args.size // STRIDE
    # An embedding with 8×8 piecewise-constant regions plus noise, so that the walk stays mostly in its region.
    regions = torch.randn(1, args.dim, 8, 8)
    features = torch.nn.functional.interpolate(regions, size=(side, side), mode="nearest")
    features = features + 0.05 * torch.randn_like(features)
    affinities = pair_affinities(features, disc_offsets(args.radius))
    cams = torch.rand(1, args.classes, side, side)
    settings = (args.radius, args.beta, args.exp_times)

    local, local_bytes, local_s = measured(random_walk, cams, affinities, *settings)
    dense, dense_bytes, dense_s = measured(dense_walk, cams, affinities, *settings)
    mib = 2 ** 20
    print(f"input {args.size}x{args.size}, stride {STRIDE}: {side}x{side} = {side * side} nodes, {args.classes} maps, "
          f"radius {args.radius}, beta {args.beta:g}, t = 2^{args.exp_times}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} thread(s)")
    print(f"neighbourhood walk: peak +{local_bytes / mib:8.1f} MiB  {local_s:7.1f} s")
    print(f"dense (HW)^2 walk:  peak +{dense_bytes / mib:8.1f} MiB  {dense_s:7.1f} s   "
          f"(one (HW)^2 float32 matrix: {(side * side) ** 2 * 4 / mib:.0f} MiB)")
    print(f"ratio neighbourhood / dense: 1/{dense_bytes / max(local_bytes, 1):.0f}   "
          f"max |difference|: {(local - dense).abs().max().item():.2e}   "
          f"(maps in [{local.min().item():.3f}, {local.max().item():.3f}])")


if __name__ == "__main__":
    main()
