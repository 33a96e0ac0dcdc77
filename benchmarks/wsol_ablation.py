"""WSOL ablation on the scenes benchmark: CAM → +PaS → +NWC → +TAP, 3 seeds (Bae et al., LID'20 talk).

    HF_HUB_OFFLINE=1 nice .venv/bin/python benchmarks/wsol_ablation.py [--out runs/wsol_ablation] [--set KEY=VALUE ...]

Same as ``scarce wsol-ablation``: thresholds are chosen on the val split and scores reported on test; the
test oracle is printed separately. Stages are cached in --out, so an interrupted run continues.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "localization" / "ablation.yaml"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--out", type=Path, default=Path("runs/wsol_ablation"))
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)

    import torch

    from scarce.config import resolve
    from scarce.localization.ablation import AblationConfig, run_ablation

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    cfg = resolve(AblationConfig, args.config, args.overrides)
    started = time.perf_counter()
    summary = run_ablation(cfg, args.out, progress=not args.quiet)
    print((args.out / "ablation.md").read_text())
    print(f"wall time {time.perf_counter() - started:.0f} s; results in {args.out}")
    sys.stdout.flush()
    return 0 if summary else 1


if __name__ == "__main__":
    sys.exit(main())
