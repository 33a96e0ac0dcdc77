"""Compare CAM and the CAM method family under one protocol, on the scenes benchmark or any dataset.

    nice python benchmarks/compare_methods.py configs/methods/*.yaml --out runs/compare --seeds 0 1 2

(``benchmarks/compare_methods.py`` calls :func:`main` here; ``scarce compare`` can call it too.)

For every seed s, every method is run through the stages of :class:`scarce.pipeline.Run` (training seed s):
train (or reuse) a classifier, fit what the CAM method learns from the training split, write CAMs, choose
the background threshold on val and score test at it (the oracle Peak IoU, the best threshold on test
itself, is reported separately), then whatever later stages the base config enables (``refine:``, pseudo
masks of ``eval.mask_splits``). Nothing is tuned on test ground truth. The data: with the scenes benchmark
and no ``data.root``, the scenes are generated once per seed (``data.scenes.seed = s``); any other dataset
(``data.kind: voc | coco | folder`` with ``data.root``) is shared by the seeds, which then change training only.

Each test mask is also profiled by :class:`scarce.metrics.extent.ErrorDistanceProfile`: ``FP far`` is the
share of false-positive pixels farther than 16 px (one feature stride at 128 px) from any object (leakage
onto context) and ``FN deep`` the share of missed object pixels deeper than 16 px inside an object
(partial activation), so the table says which failure a method fixes or adds.

Cost is in CAM units, measured in the same run: a method's training time (including the CAM training it
starts from, for ReCAM and the inference-only methods) and its inference time (fitting on the training split,
e.g. LPCAM's prototypes, plus the CAMs of val and test) are each divided by CAM's of the same seed.

Outputs: ``OUT/seed<s>/<method>/`` (a pipeline run folder each, :class:`scarce.layout.RunLayout`),
``OUT/results.json``, ``OUT/table.md`` and ``OUT/report.html`` (the table, and the methods side by side on the
same test images). Finished runs are reused, so an interrupted comparison continues where it stopped.

``compare(configs, out, seeds, base, overrides)`` is the function behind ``scarce compare``.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from scarce.cams.store import load_cam, load_cam_notes
from scarce.config import changed_keys, from_dict, load_yaml, merge, parse_overrides
from scarce.data.base import WeakDataset
from scarce.data.scenes import generate_scenes
from scarce.errors import ConfigError, DataError
from scarce.io import read_json, read_label_png, write_json, write_text
from scarce.layout import RunLayout
from scarce.methods import MethodConfig, substitute_cam_model
from scarce.metrics.extent import ErrorDistanceProfile
from scarce.pipeline import Run, RunConfig, load_run_config
from scarce.provenance import environment
from scarce.report.tables import over_seeds
from scarce.training import load_trained

DEFAULT_BASE = Path("configs") / "methods" / "base.yaml"  # relative to the repository root
BASELINE = "cam"


def load_method_config(path: str | Path) -> MethodConfig:
    data = load_yaml(path)
    data.setdefault("name", Path(path).stem)
    return from_dict(MethodConfig, data, str(path))


class MethodRun(Run):
    """A pipeline run of one method: its classifier may start from the CAM run's trained weights (``init_from``,
    ``start_from: cam``) or be that classifier itself (``classifier``, ``start_from: none``: nothing to train)."""

    def __init__(self, cfg: RunConfig, folder: str | Path, progress: bool = True, init_from: Path | None = None,
                 classifier: Path | None = None) -> None:
        super().__init__(cfg, folder, progress)
        self.init_from, self.classifier = init_from, classifier

    @property
    def model_path(self) -> Path:
        return self.classifier if self.classifier is not None else super().model_path

    def build_model(self, num_classes: int) -> tuple[torch.nn.Module, torch.nn.Module]:
        model, objective = super().build_model(num_classes)
        if self.init_from is not None:
            load_trained(model, self.init_from)
        return model, objective


def _seed_config(base: dict[str, Any], seed: int, data_root: Path | None) -> dict[str, Any]:
    """The base config at one seed: training seed s, and the scenes of seed s where they are generated."""
    seeded = merge(base, {"train": {"seed": seed}})
    if data_root is None:
        return seeded
    return merge(seeded, {"data": {"root": str(data_root), "scenes": {"seed": seed}}})


def _generated_data(base_cfg: RunConfig, seed_dir: Path) -> Path | None:
    """Where a seed's scenes are generated, or None when the base config names a dataset."""
    return seed_dir / "data" if base_cfg.data.kind == "scenes" and base_cfg.data.root is None else None


def method_run(method: MethodConfig, base: dict[str, Any], seed: int, seed_dir: Path, progress: bool) -> MethodRun:
    """The run folder ``seed_dir/<method>`` of one method on one seed, configured but not run."""
    cam_model = RunLayout(seed_dir / BASELINE).model
    overrides = dict(method.run)
    if "objective_options" in overrides:
        overrides["objective_options"] = substitute_cam_model(overrides["objective_options"], str(cam_model))
    data_root = _generated_data(from_dict(RunConfig, base), seed_dir)
    cfg = load_run_config(None, merge(_seed_config(base, seed, data_root), overrides))
    return MethodRun(cfg, seed_dir / method.name, progress, init_from=cam_model if method.start_from == "cam" else None,
                     classifier=cam_model if method.start_from == "none" else None)


def run_method(method: MethodConfig, base: dict[str, Any], seed: int, seed_dir: Path, progress: bool) -> dict[str, Any]:
    """Run (or reuse) one method on one seed through the pipeline's stages; returns its scores plus timings."""
    run = method_run(method, base, seed, seed_dir, progress)
    layout, cfg = run.layout, run.cfg
    test_set = run.dataset(cfg.data.test_split, allow_empty=True)
    if layout.compare_record.is_file():
        # a generated dataset's root follows --out; a named one must be the same
        ignore = ("data.root",) if _generated_data(from_dict(RunConfig, base), seed_dir) else ()
        changed = changed_keys(load_run_config(layout.config), cfg, ignore=ignore)
        if changed:
            raise ConfigError(f"{layout.root}: finished with another configuration ({', '.join(changed)} differ); "
                              "use another --out, or delete this folder to re-run it")
        result = read_json(layout.compare_record)
        if "error_profile" not in result or _holds_nan(result["error_profile"]):
            # finished before profiles existed, or before an undefined share was stored as null: the masks suffice
            result["error_profile"] = error_profile(layout.masks(cfg.data.test_split), test_set)
            write_json(layout.compare_record, result)
        return result
    cam_model = RunLayout(seed_dir / BASELINE).model
    needs_cam = method.start_from in ("cam", "none") or "{cam_model}" in str(method.run)
    if method.name != BASELINE and needs_cam and not cam_model.is_file():
        raise ConfigError(f"{method.name} starts from the CAM classifier of seed {seed}, which is not trained yet")
    if "test" not in cfg.eval.mask_splits:
        raise ConfigError("the comparison profiles each method's test masks: keep 'test' in eval.mask_splits")
    metrics = run.run(report=False)
    stored = run.metrics()["timings_s"]
    timings = {"train": stored.get("train", 0.0), "prepare": stored.get("prepare", 0.0),
               **{k: v for k, v in stored.items() if k.startswith("cam_")}}
    extra: dict[str, Any] = {}
    if hasattr(run.prepared_method, "stats"):
        extra["stats"] = run.prepared_method.stats
    notes = image_notes(run)
    if notes:
        extra["image_notes"] = notes
    result = {"method": method.name, "seed": seed, "start_from": method.start_from,
              "uses_cam_classifier": method.name != BASELINE and needs_cam, "timings_s": timings,
              "threshold": metrics["threshold"], "val_peak_miou": metrics["val_peak_miou"], "test": metrics["test"],
              "test_oracle": metrics["test_oracle"], "extra": extra,
              "error_profile": error_profile(layout.masks(cfg.data.test_split), test_set)}
    for later in ("refined", "masks"):  # the ladder's later rungs, where the base config enables them
        if later in metrics:
            result[later] = {k: v for k, v in metrics[later].items() if k != "curves"}
    write_json(layout.compare_record, result)
    return result


def _holds_nan(profile: dict[str, Any]) -> bool:
    values = [v for value in profile.values() for v in (value if isinstance(value, list) else [value])]
    return any(isinstance(v, float) and math.isnan(v) for v in values)


def image_notes(run: Run) -> dict[str, dict[str, dict[str, Any]]]:
    """``{split: {stem: notes}}``: what the CAM method recorded about each image (RIB: its fine-tuning steps and
    why they stopped), read from the CAM files, so that it covers every image however often the run resumed."""
    notes = {}
    for split in run.cam_splits():
        folder = run.layout.cams(split)
        found = {sample.stem: load_cam_notes(run.layout.map_file(folder, sample.stem))
                 for sample in run.dataset(split, allow_empty=True).samples}
        if any(found.values()):
            notes[split] = found
    return notes


def error_profile(masks: Path, dataset: WeakDataset) -> dict[str, object]:
    """:class:`ErrorDistanceProfile` of a folder of masks against the ground truth of ``dataset``."""
    profile = ErrorDistanceProfile()
    for sample in dataset.samples:
        path = RunLayout.mask_file(masks, sample.stem)
        try:
            profile.update(read_label_png(path), dataset.load_mask(sample))
        except ValueError as exc:
            raise DataError(path, f"against the ground truth of {sample.stem}: {exc}") from None
    return profile.compute()


def cost_units(result: dict[str, Any], cam: dict[str, Any]) -> tuple[float | None, float]:
    """(training, inference) time of a method divided by CAM's of the same seed; the training cost is None where
    a training time is unknown (a run resumed from a checkpoint that kept none)."""
    t, c = result["timings_s"], cam["timings_s"]
    if result["start_from"] == "none":
        parts = [c["train"]]
    else:  # ReCAM continues the CAM classifier; OC-CSE needs it as its frozen ordinary classifier
        parts = [t["train"]] + ([c["train"]] if result.get("uses_cam_classifier") else [])
    infer = t["prepare"] + sum(v for k, v in t.items() if k.startswith("cam_"))
    cam_infer = c["prepare"] + sum(v for k, v in c.items() if k.startswith("cam_"))
    if None in parts or c["train"] is None:
        return None, infer / cam_infer
    return sum(parts) / c["train"], infer / cam_infer


def _mean_std(values: list[float]) -> tuple[float, float]:
    array = np.asarray(values, dtype=np.float64)
    return float(array.mean()), float(array.std(ddof=1)) if len(array) > 1 else 0.0


def _defined_mean(key: str, values: Sequence[float | None]) -> dict[str, Any]:
    """``{key: mean of the defined values or None, key_seeds: how many}``; None and NaN (records written
    before undefined shares were stored as null) are undefined."""
    defined = [v for v in values if v is not None and not math.isnan(v)]
    return {key: float(np.mean(defined)) if defined else None, f"{key}_seeds": len(defined)}


def _partial_cell(row: dict[str, Any], key: str) -> str:
    """A value of :func:`_defined_mean`: a dash where no seed defines it, else says over how many seeds."""
    if not row[f"{key}_seeds"]:
        return "–"
    return over_seeds(f"{row[key]:.2f}", row[f"{key}_seeds"], row["seeds"])


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
            # a seed without false positives (or misses) has no share: the mean is over the others
            **_defined_mean("fp_far", [per_seed[s]["error_profile"]["fp_far"] for s in seeds]),
            **_defined_mean("fn_deep", [per_seed[s]["error_profile"]["fn_deep"] for s in seeds]),
            "threshold": float(np.mean([per_seed[s]["threshold"] for s in seeds])),
            # a training time unknown on a seed (a resume from a checkpoint that kept none) is left out likewise
            **_defined_mean("train_cost", [c[0] for c in costs]),
            "infer_cost": float(np.mean([c[1] for c in costs])),
        })
    return rows


def markdown_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| method | test mIoU (val-chosen thr.), mean ± std | Δ vs CAM | oracle Peak IoU | FP | FN | "
             "FP far | FN deep | thr. | train cost | inference cost |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['miou_mean']:.1f} ± {r['miou_std']:.1f} | {r['gain_mean']:+.1f} | "
                     f"{r['peak_iou']:.1f} | {r['fp']:.3f} | {r['fn']:.3f} | {_partial_cell(r, 'fp_far')} | "
                     f"{_partial_cell(r, 'fn_deep')} | {r['threshold']:.2f} | "
                     f"{_partial_cell(r, 'train_cost')} | {r['infer_cost']:.2f} |")
    return "\n".join(lines) + "\n"


def write_report(out: Path, rows: list[dict[str, Any]], runs: Mapping[str, Run], seed: int, count: int = 6) -> None:
    """The table and, for the first test images, every method's CAM and mask side by side (``runs``: the
    methods' runs of ``seed``, by name)."""
    from scarce.report.html import HtmlReport
    from scarce.report.visual import colorize_labels, overlay_heatmap

    report = HtmlReport("scarce: CAM methods compared", subtitle=str(out))
    report.paragraph("Test mIoU at the background threshold chosen on val (mean ± std over seeds); oracle Peak IoU "
                     "uses test ground truth and is for reference only; FP/FN are fractions of each class's union "
                     "(mean over classes); FP far / FN deep are the shares of false positives farther than 16 px "
                     "from any object (context leakage) and of misses deeper than 16 px inside one (partial "
                     "activation); cost is time divided by CAM's in the same run.")
    report.table([{"method": r["method"], "test mIoU": r["miou_mean"], "± std": r["miou_std"], "Δ vs CAM": r["gain_mean"],
                   "oracle Peak IoU": r["peak_iou"], "FP": r["fp"], "FN": r["fn"], "FP far": _partial_cell(r, "fp_far"),
                   "FN deep": _partial_cell(r, "fn_deep"), "train cost": _partial_cell(r, "train_cost"),
                   "inference cost": r["infer_cost"]} for r in rows], caption="Methods", float_format="{:.2f}")
    baseline = runs[BASELINE]
    test = baseline.cfg.data.test_split
    dataset = baseline.dataset(test, allow_empty=True)
    heat_rows, mask_rows = [], []
    for sample in dataset.samples[:count]:
        image = dataset.load_image(sample)
        names = ", ".join(dataset.class_names[k] for k in sample.labels)
        heat = [(f"{sample.stem}: {names}", image)]
        masks = [("ground truth", colorize_labels(dataset.load_mask(sample)))]
        for name, run in runs.items():
            cams, _ = load_cam(run.layout.map_file(run.layout.cams(test), sample.stem))
            heat.append((name, overlay_heatmap(image, cams.max(axis=0) if len(cams) else np.zeros(image.shape[:2]))))
            masks.append((name, colorize_labels(read_label_png(run.layout.mask_file(run.layout.masks(test), sample.stem)))))
        heat_rows.append(heat)
        mask_rows.append(masks)
    report.gallery(heat_rows, caption=f"Seed {seed}, test images: CAM (max over the image's classes) per method", width=160)
    report.gallery(mask_rows, caption=f"Seed {seed}, test images: masks at each method's val-chosen threshold", width=160)
    report.save(out / "report.html")


def compare(configs: Sequence[str | Path], out: str | Path, seeds: Sequence[int] = (0, 1, 2),
            base: str | Path | None = None, overrides: Sequence[str] | None = None,
            method_overrides: Mapping[str, Sequence[str]] | None = None, progress: bool = False) -> dict[str, Any]:
    """Run CAM and every method config for each seed; write and return the table.

    ``configs``: method YAML files (``configs/methods/*.yaml``; a ``cam`` baseline is added when missing).
    ``base``: the benchmark's run config (default ``configs/methods/base.yaml``; any dataset, see the module
    docstring); ``overrides``: ``key=value``
    strings applied to it (e.g. ``train.epochs=1`` for a smoke run); ``method_overrides``: per method name,
    ``key=value`` strings applied to that method's ``run`` settings (e.g. ``{"advcam": ["cam.options.adv_iter=2"]}``).
    """
    out = Path(out)
    base_path = Path(base) if base is not None else DEFAULT_BASE
    if not base_path.is_file():
        raise ConfigError(f"{base_path}: benchmark config not found (run from the repository root or pass base=)")
    base_data = merge(load_yaml(base_path), parse_overrides(list(overrides or [])))
    base_cfg = from_dict(RunConfig, base_data)
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
        data_root = _generated_data(base_cfg, seed_dir)
        if data_root is not None and not (data_root / "scenes.json").is_file():
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
    first = {m.name: method_run(m, base_data, seeds[0], out / f"seed{seeds[0]}", progress) for m in methods}
    write_report(out, rows, first, seeds[0])
    return summary
