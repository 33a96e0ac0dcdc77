"""``scarce cil run CONFIG`` and ``scarce cil compare CONFIG...``."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from scarce.errors import ConfigError


def register(subparsers: argparse._SubParsersAction) -> None:
    cil = subparsers.add_parser("cil", help="class-incremental learning: run one method, compare several")
    sub = cil.add_subparsers(dest="cil_command", metavar="SUBCOMMAND")
    cil.set_defaults(func=lambda args: (cil.print_help(), 2)[1])

    run = sub.add_parser("run", help="train one method through every phase; writes acc_matrix.json, metrics.json, report.html")
    run.add_argument("config", type=Path, help="YAML config (see configs/cil/)")
    run.add_argument("--out", type=Path, help="run folder (default runs/cil/CONFIG-NAME-seedSEED)")
    run.add_argument("--seed", type=int, help="override the config's seed")
    run.add_argument("--resume", action="store_true", help="continue from the run folder's last checkpoint")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override a config value, e.g. --set train.epochs=2 (repeatable)")
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    run.set_defaults(func=cmd_run)

    cmp_ = sub.add_parser("compare", help="run several method configs under one protocol and seeds; writes one table")
    cmp_.add_argument("configs", type=Path, nargs="+", help="YAML configs sharing data, protocol and model")
    cmp_.add_argument("--out", type=Path, default=Path("runs/cil/compare"), help="output folder (default runs/cil/compare)")
    cmp_.add_argument("--seeds", type=int, nargs="+", help="seeds (default: each config's seed)")
    cmp_.add_argument("--resume", action="store_true", help="reuse finished runs and resume interrupted ones")
    cmp_.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                      help="override a value in every config (repeatable)")
    cmp_.add_argument("--quiet", action="store_true", help="no progress bars")
    cmp_.set_defaults(func=cmd_compare)


def cmd_run(args: argparse.Namespace) -> int:
    from scarce.cil import load_config, run
    from scarce.distributed import restart_count

    cfg = load_config(args.config, args.overrides)
    if args.seed is not None:
        cfg = dataclasses.replace(cfg, seed=args.seed)
    out = args.out or Path("runs/cil") / f"{args.config.stem}-seed{cfg.seed}"
    checkpoint = (out / "checkpoints" / "last.pt").exists()
    if not args.resume and checkpoint:
        raise ConfigError(f"{out}: already holds a run; pass --resume to continue it or choose another --out")
    # a job torchrun restarted before its first checkpoint starts afresh
    resume = args.resume and (checkpoint or not restart_count())
    result = run(cfg, out, resume=resume, progress=not args.quiet)
    m = result.metrics
    for head, hm in m["heads"].items():
        star = " *" if head == m["primary_head"] else ""
        print(f"{m['method']} [{head}{star}] average incremental accuracy {hm['average_incremental_accuracy']:.2f}%, "
              f"last {hm['last_accuracy']:.2f}%, forgetting (max) {_f(hm['forgetting_max'])}")
    training = (m.get("memory_policy") or {}).get("policy_training") or {}
    if "episodes_run" in training:
        print(f"RMM policy: {training['episodes_run']} pseudo tasks in {training['time_s']:.1f} s "
              f"(included below), written to {out}/rmm_policy.pt")
    print(f"wrote {out}/acc_matrix.json, metrics.json, report.html ({m['wall_time_s']:.1f} s)")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from scarce.cil import compare, load_config

    configs = [load_config(p, args.overrides) for p in args.configs]
    methods = [c.method_name for c in configs]
    names = methods if len(set(methods)) == len(methods) else [p.stem for p in args.configs]
    compare(configs, args.out, seeds=args.seeds, names=names, resume=args.resume, progress=not args.quiet)
    print((args.out / "compare.md").read_text(encoding="utf-8"), end="")
    print(f"wrote {args.out}/compare.md, compare.json, compare.html")
    return 0


def _f(v: float | None) -> str:
    return "–" if v is None else f"{v:.2f}"
