"""Compare CAM and the CAM method family under one protocol on the scenes benchmark.

    nice python benchmarks/compare_methods.py configs/methods/*.yaml --out runs/compare --seeds 0 1 2

(``benchmarks/compare_methods.py`` calls :func:`main` here; ``scarce compare`` can call it too.)

For every seed s the scenes benchmark is generated once (``data.scenes.seed = s``) and every method is run on
it through :class:`scarce.pipeline.Run` (training seed s as well): train (or reuse) a classifier, fit what
the CAM method learns from the training split, write CAMs of val and test, choose the background threshold
on val and score test at it; the oracle Peak IoU (best threshold on test itself) is reported separately.
Nothing is tuned on test ground truth.

Each test mask is also profiled by :class:`scarce.metrics.extent.ErrorDistanceProfile`: ``FP far`` is the
share of false-positive pixels farther than 16 px (one feature stride at 128 px) from any object (leakage
onto context) and ``FN deep`` the share of missed object pixels deeper than 16 px inside an object
(partial activation), so the table says which failure a method fixes or adds.

Cost is in CAM units, measured in the same run: a method's training time (including the CAM training it
starts from, for ReCAM and the inference-only methods) and its inference time (fitting on the training split,
e.g. LPCAM's prototypes, plus the CAMs of val and test) are each divided by CAM's of the same seed.

Outputs: ``OUT/seed<s>/<method>/`` (a pipeline run folder each), ``OUT/results.json``, ``OUT/table.md`` and
``OUT/report.html`` (the table, and the methods side by side on the same test images). Finished runs are
reused, so an interrupted comparison continues where it stopped.

``compare(configs, out, seeds, base, overrides)`` is the function behind ``scarce compare``.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from scarce.cams.store import load_cam
from scarce.config import changed_keys, from_dict, load_yaml, merge, parse_overrides
from scarce.data.base import open_dataset
from scarce.data.scenes import generate_scenes
from scarce.errors import ConfigError, DataError
from scarce.io import read_json, read_label_png, write_json, write_text
from scarce.methods import MethodConfig, substitute_cam_model
from scarce.metrics.extent import ErrorDistanceProfile
from scarce.pipeline import Run, RunConfig, load_run_config
from scarce.provenance import environment
from scarce.training import load_trained

DEFAULT_BASE = Path("configs") / "methods" / "base.yaml"  # relative to the repository root
BASELINE = "cam"


def load_method_config(path: str | Path) -> MethodConfig:
    data = load_yaml(path)
    data.setdefault("name", Path(path).stem)
    return from_dict(MethodConfig, data, str(path))


class MethodRun(Run):
    """A pipeline run whose classifier may start from another run's trained weights (``init_from``)."""

    def __init__(self, cfg: RunConfig, folder: str | Path, progress: bool = True, init_from: Path | None = None) -> None:
        super().__init__(cfg, folder, progress)
        self.init_from = init_from

    def build_model(self, num_classes: int):
        model, objective = super().build_model(num_classes)
        if self.init_from is not None:
            state = torch.load(self.init_from, map_location="cpu", weights_only=True)
            model.load_state_dict(state["model"])
        return model, objective


def _seed_config(base: dict[str, Any], seed: int, data_root: Path) -> dict[str, Any]:
    return merge(base, {"data": {"root": str(data_root), "scenes": {"seed": seed}}, "train": {"seed": seed}})


def run_method(method: MethodConfig, base: dict[str, Any], seed: int, seed_dir: Path, progress: bool) -> dict[str, Any]:
    """Train/reuse, prepare, extract and score one method on one seed; returns metrics plus timings (seconds)."""
    folder = seed_dir / method.name
    cam_model = seed_dir / BASELINE / "train" / "model.pt"
    overrides = dict(method.run)
    if "objective_options" in overrides:
        overrides["objective_options"] = substitute_cam_model(overrides["objective_options"], str(cam_model))
    cfg = load_run_config(None, merge(_seed_config(base, seed, seed_dir / "data"), overrides))
    done = folder / "compare.json"
    if done.is_file():
        changed = changed_keys(load_run_config(folder / "config.yaml"), cfg, ignore=("data.root",))  # root follows --out
        if changed:
            raise ConfigError(f"{folder}: finished with another configuration ({', '.join(changed)} differ); "
                              "use another --out, or delete this folder to re-run it")
        result = read_json(done)
        if "error_profile" not in result:  # finished before profiles existed: the masks are all it needs
            result["error_profile"] = error_profile(folder / "masks" / "test", seed_dir / "data")
            write_json(done, result)
        return result
    needs_cam = method.start_from in ("cam", "none") or "{cam_model}" in str(method.run)
    if method.name != BASELINE and needs_cam and not cam_model.is_file():
        raise ConfigError(f"{method.name} starts from the CAM classifier of seed {seed}, which is not trained yet")
    run = MethodRun(cfg, folder, progress, init_from=cam_model if method.start_from == "cam" else None)
    folder.mkdir(parents=True, exist_ok=True)
    run.write_config()
    timings: dict[str, float] = {}
    started = time.perf_counter()
    if method.start_from == "none":
        model, objective = run.build_model(run.dataset(cfg.data.train_split).num_classes)
        load_trained(model, cam_model, None)
    else:
        model, objective = run.train(resume=True)
    timings["train"] = run.timings.get("train", time.perf_counter() - started)
    started = time.perf_counter()
    cam_method = run.cam_method(model, objective)
    timings["prepare"] = time.perf_counter() - started
    for split in (cfg.data.val_split, cfg.data.test_split):
        started = time.perf_counter()
        run.extract_cams(split, model, cam_method)
        timings[f"cam_{split}"] = time.perf_counter() - started
    metrics = run.evaluate()
    masks = run.write_masks(cfg.data.test_split, metrics["threshold"])
    write_json(folder / "metrics.json", metrics)
    extra = {}
    for attr in ("stats", "steps_taken"):
        if hasattr(cam_method, attr):
            extra[attr] = getattr(cam_method, attr)
    result = {"method": method.name, "seed": seed, "start_from": method.start_from,
              "uses_cam_classifier": method.name != BASELINE and needs_cam, "timings_s": timings,
              "threshold": metrics["threshold"], "val_peak_miou": metrics["val_peak_miou"], "test": metrics["test"],
              "test_oracle": metrics["test_oracle"], "extra": extra,
              "error_profile": error_profile(masks, seed_dir / "data", cfg.data.test_split)}
    write_json(done, result)
    return result


def error_profile(masks: Path, data_root: Path, split: str = "test") -> dict[str, object]:
    """:class:`ErrorDistanceProfile` of a folder of masks against the scenes ground truth of ``split``."""
    profile = ErrorDistanceProfile()
    dataset = open_dataset("scenes", data_root, split, allow_empty=True)
    for sample in dataset.samples:
        path = masks / f"{sample.stem}.png"
        try:
            profile.update(read_label_png(path), dataset.load_mask(sample))
        except ValueError as exc:
            raise DataError(path, f"against the ground truth of {sample.stem}: {exc}") from None
    return profile.compute()


def cost_units(result: dict[str, Any], cam: dict[str, Any]) -> tuple[float, float]:
    """(training, inference) time of a method divided by CAM's of the same seed."""
    t, c = result["timings_s"], cam["timings_s"]
    if result["start_from"] == "none":
        train = c["train"]
    else:  # ReCAM continues the CAM classifier; OC-CSE needs it as its frozen ordinary classifier
        train = t["train"] + (c["train"] if result.get("uses_cam_classifier") else 0.0)
    infer = t["prepare"] + sum(v for k, v in t.items() if k.startswith("cam_"))
    cam_infer = c["prepare"] + sum(v for k, v in c.items() if k.startswith("cam_"))
    return train / c["train"], infer / cam_infer


def _mean_std(values: list[float]) -> tuple[float, float]:
    array = np.asarray(values, dtype=np.float64)
    return float(array.mean()), float(array.std(ddof=1)) if len(array) > 1 else 0.0


def summarize(results: dict[str, dict[int, dict[str, Any]]]) -> list[dict[str, Any]]:
    rows = []
    cam = results[BASELINE]
    for name, per_seed in results.items():
        seeds = sorted(per_seed)
        miou = [100 * per_seed[s]["test"]["miou"] for s in seeds]
        gain = [m - 100 * cam[s]["test"]["miou"] for m, s in zip(miou, seeds)]
        costs = [cost_units(per_seed[s], cam[s]) for s in seeds]
        mean, std = _mean_std(miou)
        rows.append({
            "method": name, "seeds": len(seeds), "miou_mean": mean, "miou_std": std,
            "gain_mean": float(np.mean(gain)), "gain_per_seed": gain,
            "peak_iou": float(np.mean([100 * per_seed[s]["test_oracle"]["peak_iou"] for s in seeds])),
            "fp": float(np.mean([per_seed[s]["test"]["fp"] for s in seeds])),
            "fn": float(np.mean([per_seed[s]["test"]["fn"] for s in seeds])),
            "fp_far": float(np.mean([per_seed[s]["error_profile"]["fp_far"] for s in seeds])),
            "fn_deep": float(np.mean([per_seed[s]["error_profile"]["fn_deep"] for s in seeds])),
            "threshold": float(np.mean([per_seed[s]["threshold"] for s in seeds])),
            "train_cost": float(np.mean([c[0] for c in costs])), "infer_cost": float(np.mean([c[1] for c in costs])),
        })
    return rows


def markdown_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| method | test mIoU (val-chosen thr.), mean ± std | Δ vs CAM | oracle Peak IoU | FP | FN | "
             "FP far | FN deep | thr. | train cost | inference cost |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['miou_mean']:.1f} ± {r['miou_std']:.1f} | {r['gain_mean']:+.1f} | "
                     f"{r['peak_iou']:.1f} | {r['fp']:.3f} | {r['fn']:.3f} | {r['fp_far']:.2f} | "
                     f"{r['fn_deep']:.2f} | {r['threshold']:.2f} | "
                     f"{r['train_cost']:.2f} | {r['infer_cost']:.2f} |")
    return "\n".join(lines) + "\n"


def write_report(out: Path, rows: list[dict[str, Any]], methods: list[str], seed: int, count: int = 6) -> None:
    """The table and, for the first test images of ``seed``, every method's CAM and mask side by side."""
    from scarce.report.html import HtmlReport
    from scarce.report.visual import colorize_labels, overlay_heatmap

    report = HtmlReport("scarce: CAM methods compared", subtitle=str(out))
    report.paragraph("Test mIoU at the background threshold chosen on val (mean ± std over seeds); oracle Peak IoU "
                     "uses test ground truth and is for reference only; FP/FN are fractions of each class's union "
                     "(mean over classes); FP far / FN deep are the shares of false positives farther than 16 px "
                     "from any object (context leakage) and of misses deeper than 16 px inside one (partial "
                     "activation); cost is time divided by CAM's in the same run.")
    report.table([{"method": r["method"], "test mIoU": r["miou_mean"], "± std": r["miou_std"], "Δ vs CAM": r["gain_mean"],
                   "oracle Peak IoU": r["peak_iou"], "FP": r["fp"], "FN": r["fn"], "FP far": r["fp_far"],
                   "FN deep": r["fn_deep"], "train cost": r["train_cost"],
                   "inference cost": r["infer_cost"]} for r in rows], caption="Methods", float_format="{:.2f}")
    seed_dir = out / f"seed{seed}"
    dataset = open_dataset("scenes", seed_dir / "data", "test", allow_empty=True)
    heat_rows, mask_rows = [], []
    for sample in dataset.samples[:count]:
        image = dataset.load_image(sample)
        names = ", ".join(dataset.class_names[k] for k in sample.labels)
        heat = [(f"{sample.stem}: {names}", image)]
        masks = [("ground truth", colorize_labels(dataset.load_mask(sample)))]
        for name in methods:
            cams, _ = load_cam(seed_dir / name / "cams" / "test" / f"{sample.stem}.npz")
            heat.append((name, overlay_heatmap(image, cams.max(axis=0) if len(cams) else np.zeros(image.shape[:2]))))
            masks.append((name, colorize_labels(read_label_png(seed_dir / name / "masks" / "test" / f"{sample.stem}.png"))))
        heat_rows.append(heat)
        mask_rows.append(masks)
    report.gallery(heat_rows, caption=f"Seed {seed}, test images: CAM (max over the image's classes) per method", width=160)
    report.gallery(mask_rows, caption=f"Seed {seed}, test images: masks at each method's val-chosen threshold", width=160)
    report.save(out / "report.html")


def compare(configs: Sequence[str | Path], out: str | Path, seeds: Sequence[int] = (0, 1, 2),
            base: str | Path | None = None, overrides: Sequence[str] | None = None,
            method_overrides: Mapping[str, Sequence[str]] | None = None, progress: bool = False) -> dict[str, Any]:
    """Run CAM and every method config on the scenes benchmark for each seed; write and return the table.

    ``configs``: method YAML files (``configs/methods/*.yaml``; a ``cam`` baseline is added when missing).
    ``base``: the benchmark's run config (default ``configs/methods/base.yaml``); ``overrides``: ``key=value``
    strings applied to it (e.g. ``train.epochs=1`` for a smoke run); ``method_overrides``: per method name,
    ``key=value`` strings applied to that method's ``run`` settings (e.g. ``{"advcam": ["cam.options.adv_iter=2"]}``).
    """
    out = Path(out)
    base_path = Path(base) if base is not None else DEFAULT_BASE
    if not base_path.is_file():
        raise ConfigError(f"{base_path}: benchmark config not found (run from the repository root or pass base=)")
    base_data = merge(load_yaml(base_path), parse_overrides(list(overrides or [])))
    base_cfg = from_dict(RunConfig, base_data)
    if base_cfg.data.kind != "scenes":
        raise ConfigError("the comparison runs on the scenes benchmark (data.kind: scenes)")
    methods = [load_method_config(path) for path in configs]
    for name, items in (method_overrides or {}).items():
        matches = [i for i, m in enumerate(methods) if m.name == name]
        if not matches:
            raise ConfigError(f"method override for {name!r}, which is not among the configs")
        m = methods[matches[0]]
        methods[matches[0]] = dataclasses.replace(m, run=merge(m.run, parse_overrides(list(items))))
    names = [m.name for m in methods]
    if len(set(names)) != len(names):
        raise ConfigError(f"method names must be unique, got {names}")
    if BASELINE not in names:
        methods.insert(0, MethodConfig(name=BASELINE, description="CAM baseline"))
    else:
        methods.insert(0, methods.pop(names.index(BASELINE)))
    results: dict[str, dict[int, dict[str, Any]]] = {m.name: {} for m in methods}
    wall = time.perf_counter()
    for seed in seeds:
        seed_dir = out / f"seed{seed}"
        data_root = seed_dir / "data"
        if not (data_root / "scenes.json").is_file():
            generate_scenes(dataclasses.replace(base_cfg.data.scenes, seed=seed), data_root, progress=progress)
        for method in methods:
            started = time.perf_counter()
            result = run_method(method, base_data, seed, seed_dir, progress)
            results[method.name][seed] = result
            print(f"seed {seed} {method.name:10s} test mIoU {100 * result['test']['miou']:5.1f}  "
                  f"(thr {result['threshold']:.2f}, val peak {100 * result['val_peak_miou']:.1f}, "
                  f"oracle {100 * result['test_oracle']['peak_iou']:.1f})  "
                  f"[{time.perf_counter() - started:.0f} s]", flush=True)
    rows = summarize(results)
    table = markdown_table(rows)
    summary = {"seeds": list(seeds), "methods": [dataclasses.asdict(m) for m in methods], "rows": rows,
               "wall_s": time.perf_counter() - wall, "environment": environment(), "per_seed": results}
    write_json(out / "results.json", summary)
    write_text(out / "table.md", table)
    write_report(out, rows, [m.name for m in methods], seeds[0])
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("configs", nargs="+", type=Path, help="method configs (configs/methods/*.yaml)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--base", type=Path, default=None, help=f"benchmark run config (default {DEFAULT_BASE})")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a base config value, e.g. --set train.epochs=1")
    parser.add_argument("--set-method", dest="method_overrides", action="append", default=[],
                        metavar="METHOD:KEY=VALUE", help="override a method's run setting, e.g. advcam:cam.options.adv_iter=8")
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args(argv)
    per_method: dict[str, list[str]] = {}
    for item in args.method_overrides:
        name, _, setting = item.partition(":")
        if not setting:
            raise ConfigError(f"--set-method {item!r} must look like METHOD:KEY=VALUE")
        per_method.setdefault(name, []).append(setting)
    base = args.base or DEFAULT_BASE
    # a shell glob such as configs/methods/*.yaml also matches the benchmark configs, which are not methods
    benchmarks = {base.resolve(), DEFAULT_BASE.resolve()}
    configs = [p for p in args.configs if p.resolve() not in benchmarks]
    summary = compare(configs, args.out, args.seeds, args.base, args.overrides, per_method, args.progress)
    print()
    print(markdown_table(summary["rows"]), end="")
    print(f"wall time {summary['wall_s']:.0f} s; table: {args.out / 'table.md'}; report: {args.out / 'report.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
