"""Localization commands: ``localize`` (boxes and masks for any photos), ``wsol-eval`` (WSOL metrics of a
trained model on a dataset with boxes or masks) and ``wsol-ablation`` (CAM → +PaS → +NWC → +TAP)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from scarce.cli import add_optional_config, add_quiet, optional_config

# `scarce.localization.localize.localizable_methods()`, the registered CAM methods that need no training data
# (a test keeps the two equal; importing the methods here would slow every command's start)
LOCALIZE_METHODS = ("advcam", "cam", "gradcam")


def register(sub: argparse._SubParsersAction) -> None:
    loc = sub.add_parser(
        "localize", help="boxes and masks of the top classes of photos, from CAMs (COCO-style JSON + HTML)",
        description="Localize objects in photos with a classifier's class activation maps. With no --model, "
                    "tf_efficientnet_lite0 with the ImageNet weights shipped offline is used.")
    loc.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="image files or folders of images")
    loc.add_argument("--model", default="tf_efficientnet_lite0", help="timm model name (default %(default)s)")
    loc.add_argument("--weights", default="auto",
                     help="auto (offline weights), hub (timm's hub, online), none, or a checkpoint file "
                          "(a timm state dict or a scarce model.pt)")
    loc.add_argument("--class-names", help="file with one class name per line (for checkpoints without names)")
    loc.add_argument("--class", dest="classes", action="append", default=[], metavar="NAME|auto",
                     help="class to localize (name, synonym, WordNet id or index; repeatable); "
                          "default auto: the top-k predicted classes")
    loc.add_argument("--top-k", type=int, default=5, help="classes per image when --class is auto (default 5)")
    loc.add_argument("--method", default="cam", choices=LOCALIZE_METHODS,
                     help="CAM method; those that learn from training data (lpcam, rib, recam) need "
                          "`scarce wsol-eval` or a run (default cam)")
    loc.add_argument("--layer", help="Grad-CAM target layer (dotted module name)")
    loc.add_argument("--nwc", action="store_true", help="negative weight clamping (Bae et al.)")
    loc.add_argument("--pas", action="store_true", help="percentile as the standard (PaS) instead of the maximum")
    loc.add_argument("--percentile", type=float, default=98.0, help="PaS percentile (default 98)")
    loc.add_argument("--threshold", type=float, default=0.2,
                     help="box threshold as a fraction of the map's maximum/percentile (default 0.2, the CAM paper)")
    loc.add_argument("--all-boxes", action="store_true", help="one box per connected component instead of the largest")
    loc.add_argument("--input-size", type=int, default=224, help="shorter image side seen by the model (default 224)")
    loc.add_argument("--scales", type=float, nargs="+", default=[1.0], help="CAM scales (default 1.0)")
    loc.add_argument("--no-flip", action="store_true", help="no horizontal-flip averaging of CAMs")
    loc.add_argument("--out", type=Path, default=Path("runs/localize"), help="output folder (default %(default)s)")
    add_quiet(loc)
    loc.set_defaults(func=cmd_localize)

    ev = sub.add_parser("wsol-eval", help="WSOL metrics of a trained scarce model: thresholds on one split, scores on another")
    ev.add_argument("--dataset", required=True, choices=("scenes", "voc", "cub", "imagenet", "openimages", "wsol"),
                    help="layout: scenes/voc (VOC folder), cub (CUB_200_2011), imagenet (val images + XML), "
                         "openimages / wsol (wsolevaluation metadata)")
    ev.add_argument("--root", type=Path, required=True, help="dataset folder (images)")
    ev.add_argument("--annotations", type=Path, help="imagenet: XML folder; openimages/wsol: metadata folder holding the splits")
    ev.add_argument("--train-split", help="split that methods which learn from training data (e.g. lpcam) fit on")
    ev.add_argument("--val-split", default="val", help="split the thresholds are chosen on (default val)")
    ev.add_argument("--test-split", default="test", help="split the scores are reported on (default test)")
    ev.add_argument("--checkpoint", type=Path, required=True, help="a scarce model.pt")
    ev.add_argument("--model", default="tf_efficientnet_lite0", help="its backbone (default %(default)s)")
    ev.add_argument("--method", default="cam")
    ev.add_argument("--nwc", action="store_true")
    ev.add_argument("--pas", action="store_true")
    ev.add_argument("--percentile", type=float, default=98.0)
    ev.add_argument("--interval", type=float, default=0.01, help="score-map threshold step (default 0.01)")
    ev.add_argument("--convention", choices=("wsolevaluation", "exact"), default="wsolevaluation")
    ev.add_argument("--out", type=Path, required=True)
    add_quiet(ev)
    ev.set_defaults(func=cmd_wsol_eval)

    ab = sub.add_parser("wsol-ablation", help="CAM → +PaS → +NWC → +TAP on the scenes benchmark (val thresholds, test scores)")
    add_optional_config(ab, "YAML over the defaults (which are configs/localization/ablation.yaml)")
    ab.add_argument("--out", type=Path, default=Path("runs/wsol_ablation"))
    ab.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config value, e.g. --set seeds=[0]")
    add_quiet(ab)
    ab.set_defaults(func=cmd_ablation)


def cmd_localize(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from scarce.localization.localize import LocalizeConfig, localize, write_outputs

    classes = tuple(c for c in args.classes if c.lower() != "auto")
    cfg = LocalizeConfig(
        model=args.model, weights=None if args.weights == "none" else args.weights, class_names=args.class_names,
        classes=classes, top_k=args.top_k, method=args.method, layer=args.layer, nwc=args.nwc,
        normalize="percentile" if args.pas else "max", percentile=args.percentile, threshold=args.threshold,
        rule="all" if args.all_boxes else "largest", input_size=args.input_size, scales=tuple(args.scales),
        flip=not args.no_flip,
    )

    def report(path: Path, exc: Exception) -> None:
        tqdm.write(f"scarce localize: skipped {path}: {getattr(exc, 'problem', exc)}", file=sys.stderr)

    results, skipped, localizer = localize(args.paths, cfg, on_error=report, progress=not args.quiet)
    json_path, html_path = write_outputs(results, skipped, localizer, args.out)
    for result in results:
        print(result.path)
        for det in result.detections:
            box = "no box" if det.box is None else "box x0,y0,x1,y1 = " + ",".join(map(str, det.box))
            print(f"  {det.score:6.3f}  {det.class_name}  [{box}]")
    print(f"{len(results)} image(s) localized, {len(skipped)} skipped; wrote {json_path} and {html_path}")
    return 1 if skipped else 0


def cmd_wsol_eval(args: argparse.Namespace) -> int:
    from scarce.cams import CamConfig, build_cam_method
    from scarce.config import to_dict
    from scarce.errors import ScarceError
    from scarce.io import read_json, write_json
    from scarce.localization.datasets import open_wsol_dataset
    from scarce.localization.evaluate import WsolMetricsConfig, evaluate_cam_folder, predicted_scores
    from scarce.localization.localize import LocalizeConfig, load_model
    from scarce.localization.metrics import protocol_scores
    from scarce.models.nwc import with_nwc
    from scarce.pipeline import extract_cams

    loaded = load_model(LocalizeConfig(model=args.model, weights=str(args.checkpoint)))
    cam_cfg = CamConfig(method=args.method, scales=(1.0,), normalize="percentile" if args.pas else "max",
                        percentile=args.percentile, clamp_negative_weights=args.nwc)
    model = with_nwc(loaded.model, args.nwc)
    settings = json.loads(json.dumps({"checkpoint": str(args.checkpoint.resolve()), "model": args.model,
                                      "dataset": args.dataset, "root": str(args.root.resolve()), "cam": to_dict(cam_cfg)}))
    settings_path = args.out / "cam_settings.json"
    if settings_path.exists() and read_json(settings_path) != settings:
        raise ScarceError(f"{args.out}: holds CAMs made with other settings; use another --out")
    write_json(settings_path, settings)  # CAM files are reused on a rerun, so they must match these settings
    method = build_cam_method(cam_cfg)
    if args.train_split:
        train_set = open_wsol_dataset(args.dataset, args.root, args.train_split, args.annotations)
        method.prepare(model, train_set, args.out / "cams" / "_prepare")
    metrics = WsolMetricsConfig(interval=args.interval, convention=args.convention)
    evaluators = {}
    for split in (args.val_split, args.test_split):
        dataset = open_wsol_dataset(args.dataset, args.root, split, args.annotations)
        cam_dir = args.out / "cams" / split
        extract_cams(model, dataset, cam_cfg, cam_dir, method=method, progress=not args.quiet)
        scores = predicted_scores(loaded.model, dataset, progress=not args.quiet)
        evaluators[split] = evaluate_cam_folder(dataset, cam_dir, metrics, scores, progress=not args.quiet)
    scores = protocol_scores(evaluators[args.val_split], evaluators[args.test_split], args.val_split, args.test_split)
    write_json(args.out / "wsol_metrics.json", scores)
    print(f"protocol: {scores['protocol']}")
    for name, value in scores["test"].items():  # type: ignore[union-attr]
        oracle = scores["oracle"][name]  # type: ignore[index]
        print(f"  {name:12s} {100 * value:6.2f}   (oracle {100 * oracle:6.2f})")
    print(f"wrote {args.out / 'wsol_metrics.json'}")
    return 0


def cmd_ablation(args: argparse.Namespace) -> int:
    from scarce.config import resolve
    from scarce.localization.ablation import AblationConfig, run_ablation

    cfg = resolve(AblationConfig, optional_config(args), args.overrides)
    started = time.perf_counter()
    run_ablation(cfg, args.out, progress=not args.quiet)
    print((args.out / "ablation.md").read_text())
    print(f"wall time {time.perf_counter() - started:.0f} s; results in {args.out}")
    return 0
