"""WSSS commands: data generation, training, CAMs, refinement, masks, scoring and the demo. Each calls scarce.pipeline.

A pipeline stage becomes a command by one entry in :data:`STAGE_COMMANDS` (``scarce NAME RUN`` runs the
stages of the run folder up to NAME, skipping finished ones).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from scarce.cli import add_optional_config, add_quiet, add_run_arguments, optional_config
from scarce.config import merge, parse_overrides

# stage name -> help; each is `scarce NAME RUN [--quiet]`
STAGE_COMMANDS = {
    "evaluate": "choose the background threshold on val, score test (CAMs made first if missing); writes metrics.json",
    "refine": "refine the CAMs with the config's `refine:` chain, choose its threshold on val, score test",
    "segment": "train the segmentation model (`segment:`) on the train split's pseudo masks, score val and test",
    "ceiling": "train the same segmentation recipe on ground-truth train masks (the fully supervised ceiling)",
}


def register(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="generate built-in datasets")
    data_sub = data.add_subparsers(dest="data_command", metavar="DATASET", required=True)
    scenes = data_sub.add_parser("scenes", help="write the scenes benchmark in PASCAL VOC layout")
    scenes.add_argument("--out", required=True, type=Path)
    scenes.add_argument("--n", type=int, default=600, help="number of images (default 600)")
    scenes.add_argument("--seed", type=int, default=0)
    scenes.add_argument("--image-size", type=int, default=160)
    scenes.add_argument("--min-objects", type=int, default=1)
    scenes.add_argument("--max-objects", type=int, default=3)
    scenes.add_argument("--scale-range", type=float, nargs=2, default=(0.35, 0.75), metavar=("LOW", "HIGH"),
                        help="object size as a fraction of the image side")
    scenes.add_argument("--occlusion", type=float, default=0.3, help="max fraction of a placed object a new one may cover")
    scenes.add_argument("--cooccurrence", type=float, default=0.7,
                        help="probability that an image's background is its first class's preferred texture")
    scenes.add_argument("--part-size", type=float, default=0.0,
                        help="side of each object's class emblem as a fraction of the object's side (0: none); "
                             "makes CAM light only a part of each object")
    scenes.add_argument("--shape-noise", type=float, default=0.0,
                        help="probability that an object's class (and emblem) is redrawn at random, so that its "
                             "shape tells the class only weakly (needs --part-size)")
    add_quiet(scenes)
    scenes.set_defaults(func=cmd_scenes)

    for name, func, text in (
        ("run", cmd_run, "run every stage of a config (data, training, CAMs, thresholds on val, refinement, pseudo masks, "
                   "segmentation, scores, report), skipping finished ones; a config with `pipeline: single_stage` "
                   "trains RecurSeed's one network instead (as `scarce recurseed run`)"),
        ("train", cmd_train, "train the classifier of a config (checkpoint every epoch; --resume continues)"),
    ):
        p = sub.add_parser(name, help=text)
        add_run_arguments(p)
        p.set_defaults(func=func)

    cam = sub.add_parser("cam", help="write CAMs of a split for a trained run")
    cam.add_argument("run", type=Path)
    cam.add_argument("--split", action="append",
                     help="split(s); default: those the pipeline needs (val, test; train for refinement or train masks)")
    add_quiet(cam)
    cam.set_defaults(func=cmd_cam)

    for name, text in STAGE_COMMANDS.items():
        stage = sub.add_parser(name, help=text)
        stage.add_argument("run", type=Path)
        add_quiet(stage)
        stage.set_defaults(func=cmd_stage, stage=name)

    masks = sub.add_parser("masks", help="turn a split's refined maps (or CAMs, without refiners) into label PNGs "
                                         "and score them against its ground truth")
    masks.add_argument("run", type=Path)
    masks.add_argument("--split", required=True)
    masks.add_argument("--threshold", type=float, help="background threshold (default: the one chosen on val)")
    masks.add_argument("--fg", type=float, help="confident masks: foreground threshold")
    masks.add_argument("--bg", type=float, help="confident masks: background threshold (255 between --bg and --fg)")
    add_quiet(masks)
    masks.set_defaults(func=cmd_masks)

    em = sub.add_parser("eval-masks", help="score a folder of label PNGs against a folder of ground-truth PNGs")
    em.add_argument("--pred", type=Path, required=True)
    em.add_argument("--gt", type=Path, required=True)
    em.add_argument("--num-classes", type=int,
                    help="object classes, background not counted, as everywhere in scarce (labels 0..N; "
                         "default: inferred from the largest label found)")
    em.add_argument("--out", type=Path, help="write the scores to this JSON file")
    em.set_defaults(func=cmd_eval_masks)

    compare = sub.add_parser(
        "compare", help="CAM and the CAM method family on the scenes benchmark, several seeds, one table",
        description="Run CAM and every method config for each seed (train, CAMs, threshold on val, scores on "
                    "test) and write OUT/table.md, OUT/results.json and OUT/report.html; finished runs are reused.")
    compare.add_argument("configs", nargs="+", type=Path, help="method configs (configs/methods/*.yaml)")
    compare.add_argument("--out", type=Path, required=True, help="output folder")
    compare.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds (default 0 1 2)")
    compare.add_argument("--base", type=Path, help="benchmark run config (default configs/methods/base.yaml)")
    compare.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                         help="override a base config value, e.g. --set train.epochs=1 (repeatable)")
    compare.add_argument("--set-method", dest="method_overrides", action="append", default=[],
                         metavar="METHOD:KEY=VALUE",
                         help="override a method's run setting, e.g. advcam:cam.options.adv_iter=8 (repeatable)")
    add_quiet(compare)
    compare.set_defaults(func=cmd_compare)

    demo = sub.add_parser("demo", help="the main job on built-in data: scenes → classifier → CAMs → CRF → pseudo masks → "
                                          "segmentation model and its ceiling → scores → report")
    add_optional_config(demo, "YAML overriding the defaults (see configs/; default: none)")
    demo.add_argument("--out", type=Path, default=Path("runs/demo"), help="run folder (default %(default)s)")
    demo.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                      help="override a config value, e.g. --set train.epochs=3")
    add_quiet(demo)
    demo.set_defaults(func=cmd_demo)


def _run_from_args(args: argparse.Namespace):
    from scarce.pipeline import Run, load_run_config

    cfg = load_run_config(args.config, parse_overrides(args.overrides))
    return Run(cfg, args.out, progress=not args.quiet)


def _existing_run(folder: Path, quiet: bool = True):
    from scarce.errors import ScarceError
    from scarce.layout import RunLayout
    from scarce.pipeline import Run, load_run_config

    config = RunLayout(folder).config
    if not config.is_file():
        raise ScarceError(f"{folder}: not a run folder (no config.yaml); create one with `scarce train` or `scarce run`")
    return Run(load_run_config(config), folder, progress=not quiet)


def cmd_scenes(args: argparse.Namespace) -> int:
    from scarce.data.scenes import ScenesConfig, generate_scenes

    cfg = ScenesConfig(n=args.n, seed=args.seed, image_size=args.image_size, min_objects=args.min_objects,
                       max_objects=args.max_objects, scale_range=tuple(args.scale_range), occlusion=args.occlusion,
                       cooccurrence=args.cooccurrence, part_size=args.part_size,
                       shape_noise=args.shape_noise)
    dataset = generate_scenes(cfg, args.out, progress=not args.quiet)
    print(f"wrote {args.n} scenes ({len(dataset.class_names)} classes) to {args.out}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from scarce.distributed import main_first, on_main
    from scarce.lock import run_lock

    run = _run_from_args(args)
    run.folder.mkdir(parents=True, exist_ok=True)
    with run_lock(run.folder):
        main_first(run.write_config)
        on_main(run.prepare_data)
        run.train(resume=args.resume)
    print(f"trained model: {run.model_path}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from scarce.singlestage.run import is_single_stage

    if is_single_stage(args.config):  # `pipeline: single_stage`: RecurSeed's one network instead of the CAM ladder
        from scarce.cli.recurseed import cmd_run as run_single_stage

        return run_single_stage(args)
    run = _run_from_args(args)
    metrics = run.run(resume=args.resume)
    print_summary(metrics, run.folder)
    return 0


def cmd_cam(args: argparse.Namespace) -> int:
    run = _existing_run(args.run, args.quiet)
    for split in args.split or run.cam_splits():
        print(f"CAMs of {split}: {run.extract_cams(split)}")
    return 0


def cmd_stage(args: argparse.Namespace) -> int:
    from scarce.errors import ConfigError

    run = _existing_run(args.run, args.quiet)
    if not run.stage(args.stage).enabled(run):
        raise ConfigError(f"{run.layout.config}: this configuration has no {args.stage!r} stage "
                          f"(e.g. `refine: [pamr]` for refinement, "
                          "`segment: {}` for segmentation)")
    metrics = run.run(until=args.stage, report=False)
    print_summary(metrics, run.folder)
    return 0


def cmd_masks(args: argparse.Namespace) -> int:
    from scarce.errors import ConfigError

    run = _existing_run(args.run, args.quiet)
    if (args.fg is None) != (args.bg is None):
        raise ConfigError("give both --fg and --bg for confident masks")
    if args.fg is not None and args.threshold is not None:
        raise ConfigError("--threshold and --fg/--bg are alternatives")
    run.run(until="refine" if run.cfg.refine else "evaluate", report=False)  # the maps and their val thresholds
    confident = None if args.fg is None else (args.fg, args.bg)
    scores = run.pseudo_masks(args.split, args.threshold, confident)
    print(f"masks: {run.layout.masks(args.split)}")
    if scores is not None:
        print(f"mask mIoU ({args.split}) {100 * scores['miou']:.2f}  FP {scores['fp']:.4f}  FN {scores['fn']:.4f}  "
              f"labelled {100 * scores['labelled_fraction']:.1f} % of pixels")
    return 0


def cmd_eval_masks(args: argparse.Namespace) -> int:
    from scarce.io import write_json
    from scarce.metrics.folders import evaluate_folders

    scores = evaluate_folders(args.pred, args.gt, None if args.num_classes is None else args.num_classes + 1)
    if args.out:
        write_json(args.out, scores)
    print(f"mIoU {scores['miou']:.4f}  FP {scores['fp']:.4f}  FN {scores['fn']:.4f}  ({scores['num_images']} images)")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from scarce.config import load_yaml
    from scarce.pipeline import Run, demo_config

    config = optional_config(args)
    cfg = demo_config(merge(load_yaml(config) if config else {}, parse_overrides(args.overrides)))
    started = time.perf_counter()
    run = Run(cfg, args.out, progress=not args.quiet)
    metrics = run.run(resume=True)
    print_summary(metrics, run.folder)
    print(f"wall time {time.perf_counter() - started:.0f} s (stages: "
          + ", ".join(f"{k} unknown" if v is None else f"{k} {v:.0f} s" for k, v in metrics["timings_s"].items()) + ")")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from scarce.errors import ConfigError
    from scarce.methods.compare import DEFAULT_BASE, compare, markdown_table

    per_method: dict[str, list[str]] = {}
    for item in args.method_overrides:
        name, _, setting = item.partition(":")
        if not setting:
            raise ConfigError(f"--set-method {item!r} must look like METHOD:KEY=VALUE")
        per_method.setdefault(name, []).append(setting)
    # a shell glob such as configs/methods/*.yaml also matches the benchmark configs, which are not methods
    benchmarks = {(args.base or DEFAULT_BASE).resolve(), DEFAULT_BASE.resolve()}
    configs = [p for p in args.configs if p.resolve() not in benchmarks]
    summary = compare(configs, args.out, args.seeds, args.base, args.overrides, per_method, progress=not args.quiet)
    print()
    print(markdown_table(summary["rows"]), end="")
    print(f"wall time {summary['wall_s']:.0f} s; table: {args.out / 'table.md'}; report: {args.out / 'report.html'}")
    return 0


def print_summary(metrics: dict, folder: Path) -> None:
    from scarce.report.wsss import MISSING, ladder_rows, summary_rows

    rows = summary_rows(metrics)
    print(f"{'quantity':34s} {'value':>7s} {'thr':>5s}  chosen on -> scored on")
    for row in rows:
        print(f"{row['quantity']:34s} {100 * row['value']:7.2f} {row['threshold']:5.2f}  "
              f"{row['threshold chosen on']} -> {row['scored on']}")
    reached = [row for row in ladder_rows(metrics)[1:] if row["mIoU"] != MISSING]
    for row in reached:  # the rungs past the seeds that this run has reached
        print(f"{row['stage']:34s} {row['mIoU']:7.2f} {'':5s}  {row['threshold chosen on']} -> {row['scored on']}")
    sources = sorted(set((metrics.get("data", {}).get("fashion_mnist") or {}).values()))
    if sources:  # the scenes, hence the numbers, depend on it: say which
        print(f"Fashion-MNIST objects from: {', '.join(sources)}")
    print(f"report: {folder / 'report.html'}   metrics: {folder / 'metrics.json'}")
    sys.stdout.flush()
