"""Diagnostic: how many stored class maps of a run are zero at every pixel (the class map died under its ReLU).

A method whose training drives its raw class maps negative everywhere (Puzzle-CAM's reconstruction term can, see
docs/benchmarks.md) leaves maps that no threshold can turn into masks. Counting them tells that collapse apart
from maps that are merely poor. Reads the ``cams/<split>/*.npz`` of each run folder; writes nothing.

    python benchmarks/dead_maps.py runs/refit/seed1/cam runs/refit/seed1/puzzle --split test
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from scarce.cams.store import load_cam
from scarce.errors import ConfigError


def count_dead(run: Path, split: str) -> tuple[int, int, float]:
    """(maps zero everywhere, maps in all, mean fraction of pixels above 0) over the split's stored maps."""
    files = sorted((run / "cams" / split).glob("*.npz"))
    if not files:
        raise ConfigError(f"{run / 'cams' / split}: no stored CAMs (run the method on split {split!r} first)")
    dead = total = 0
    positive = 0.0
    for path in files:
        cams, _ = load_cam(path)
        for cam in cams:
            total += 1
            dead += int(cam.max() <= 0)
            positive += float((cam > 0).mean())
    return dead, total, positive / max(total, 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", type=Path, nargs="+", help="run folders holding cams/<split>/")
    parser.add_argument("--split", default="test")
    args = parser.parse_args(argv)
    print("| run | maps zero everywhere | mean area above 0 |")
    print("|---|---|---|")
    for run in args.runs:
        dead, total, positive = count_dead(run, args.split)
        print(f"| {run} | {dead} of {total} | {positive:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
