"""``scarce recurseed run CONFIG --out RUN``: single-stage RS / RS + EPM (and the mixing baselines)."""

from __future__ import annotations

import argparse

from scarce.cli import add_run_arguments
from scarce.config import parse_overrides


def register(sub: argparse._SubParsersAction) -> None:
    rs = sub.add_parser("recurseed", help="single-stage WSSS: RecurSeed (+ EdgePredictMix, CutMix, ClassMix)")
    rs_sub = rs.add_subparsers(dest="recurseed_command", metavar="SUBCOMMAND")
    rs.set_defaults(func=lambda args: (rs.print_help(), 2)[1])
    run = rs_sub.add_parser("run", help="train the one network, score its decoder on val and test "
                                        "(and the multi-stage route with multi_stage: true)")
    add_run_arguments(run, "configs/recurseed/")
    run.set_defaults(func=cmd_run)


def cmd_run(args: argparse.Namespace) -> int:
    from scarce.singlestage import SingleStageRun, load_config

    run = SingleStageRun(load_config(args.config, parse_overrides(args.overrides)), args.out,
                         progress=not args.quiet)
    metrics = run.run(resume=args.resume)
    rows = [(f"seeds M_rs (t={metrics['seeds']['threshold']:.2f} from val)", "train",
             metrics["seeds"][run.cfg.data.train_split]), ("decoder maps", "train", metrics["decoder_maps"])]
    rows += [(route, split, scores) for route in ("single_stage", "multi_stage")
             for split, scores in metrics.get(route, {}).items() if split != "pseudo_masks_train"]
    for name, split, scores in rows:
        print(f"{name:34s} {split:6s} mIoU {100 * scores['miou']:6.2f}  FP {scores['fp']:.3f}  FN {scores['fn']:.3f}")
    print(f"report: {run.folder / 'report.html'}   metrics: {run.folder / 'metrics.json'}")
    return 0
