"""The WSOL ablation of Bae et al.'s LID'20 talk on the scenes benchmark: CAM → +PaS → +NWC → +TAP.

Variants are cumulative, as in the talk's table:

=============  ===========  ==========================  ======================
variant        training     CAM                          normalisation/standard
=============  ===========  ==========================  ======================
CAM            GAP          W·F                          max (MaS)
+PaS           GAP          W·F                          98th percentile (PaS)
+NWC           GAP          max(W, 0)·F                  PaS
+TAP           TAP (τ=.05)  max(W, 0)·F                  PaS
=============  ===========  ==========================  ======================

Per seed, two classifiers are trained on the scenes train split with the pipeline's trainer (GAP and TAP
pooling, same seed and schedule); CAMs of the val and test splits are written with the pipeline's CAM
loop; the four variants are scored with :mod:`scarce.localization.metrics`: thresholds chosen on val,
scores reported on test (the test oracle is kept apart). Every stage is cached in the output folder, so
a killed run continues where it stopped.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from scarce.cams import CamConfig
from scarce.config import dump_yaml
from scarce.data.scenes import ScenesConfig, generate_scenes
from scarce.errors import ScarceError
from scarce.io import read_json, write_json, write_text
from scarce.localization.evaluate import WsolMetricsConfig, evaluate_cam_folder, predicted_scores
from scarce.localization.metrics import PROTOCOL, protocol_scores
from scarce.models.nwc import with_nwc
from scarce.models.classifier import ModelConfig
from scarce.provenance import environment
from scarce.training import TrainConfig
from scarce.training.transforms import AugmentConfig

METRICS = ("MaxBoxAccV1", "MaxBoxAccV2", "PxAP", "PeakIoU", "Top1Loc")


@dataclass(frozen=True)
class Variant:
    name: str
    pooling: str
    nwc: bool
    normalize: str


VARIANTS = (
    Variant("CAM (baseline)", "gap", False, "max"),
    Variant("+PaS", "gap", False, "percentile"),
    Variant("+NWC", "gap", True, "percentile"),
    Variant("+TAP", "tap", True, "percentile"),
)


@dataclass(frozen=True)
class AblationConfig:
    """Defaults = ``configs/localization/ablation.yaml``: the demo's data and recipe (360/120/120 images of 128 px)."""

    scenes: ScenesConfig = field(default_factory=lambda: ScenesConfig(n=600, image_size=128))
    data_root: str | None = None  # an existing scenes folder; None: generated in the output folder
    seeds: tuple[int, ...] = (0, 1, 2)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=8, augment=AugmentConfig(crop_size=128)))
    cam: CamConfig = field(default_factory=lambda: CamConfig(method="cam", scales=(1.0,), flip=False))
    percentile: float = 98.0
    tap_tau: float = 0.05
    # TAP pools the mean of a channel's active positions, not of all: on sparse maps its features are larger
    # than GAP's and the same step size is too large (docs/localization.md). None: train.lr for both.
    tap_lr: float | None = None
    metrics: WsolMetricsConfig = field(default_factory=WsolMetricsConfig)


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name.lower()).strip("_")


def _run_seed(cfg: AblationConfig, seed: int, data_root: Path, folder: Path, progress: bool,
              log: Callable[[str], None]) -> dict[str, Any]:
    """Train both classifiers of one seed, write the variants' CAMs, score them (cached in ``folder``)."""
    from scarce.pipeline import DataConfig, Run, RunConfig, extract_cams

    results_path = folder / "results.json"
    if results_path.exists():
        return read_json(results_path)
    results: dict[str, Any] = {"seed": seed, "variants": {}, "seconds": {}}
    runs: dict[str, Any] = {}
    for variant in VARIANTS:
        if variant.pooling not in runs:
            run_cfg = RunConfig(
                data=DataConfig(kind="scenes", root=str(data_root)),
                model=replace(cfg.model, pooling=variant.pooling, tap_tau=cfg.tap_tau),
                train=replace(cfg.train, seed=seed, lr=cfg.tap_lr if variant.pooling == "tap" and cfg.tap_lr else cfg.train.lr),
                cam=cfg.cam,
            )
            run = Run(run_cfg, folder / variant.pooling, progress=progress)
            run.folder.mkdir(parents=True, exist_ok=True)
            run.write_config()
            started = time.perf_counter()
            model, objective = run.train(resume=True)
            results["seconds"][f"train_{variant.pooling}"] = time.perf_counter() - started
            log(f"seed {seed}: {variant.pooling.upper()} classifier ready ({time.perf_counter() - started:.0f} s)")
            scores = {split: predicted_scores(model, run.dataset(split, allow_empty=True)) for split in ("val", "test")}
            runs[variant.pooling] = (run, model, objective, scores)
        run, model, objective, scores = runs[variant.pooling]
        cam_cfg = replace(cfg.cam, normalize=variant.normalize, percentile=cfg.percentile,
                          clamp_negative_weights=variant.nwc)
        cam_model = with_nwc(model, variant.nwc)  # NWC for any CAM method, not only the one that reads the flag
        method = Run(replace(run.cfg, cam=cam_cfg), run.folder, progress=progress).cam_method(cam_model, objective)
        started = time.perf_counter()
        evaluators = {}
        for split in ("val", "test"):
            dataset = run.dataset(split, allow_empty=True)
            cam_dir = folder / "cams" / _slug(variant.name) / split
            if not (cam_dir / "_complete").exists():
                extract_cams(cam_model, dataset, cam_cfg, cam_dir, method=method, progress=progress)
                write_text(cam_dir / "_complete", "")
            evaluators[split] = evaluate_cam_folder(dataset, cam_dir, cfg.metrics, scores[split])
        results["variants"][variant.name] = protocol_scores(evaluators["val"], evaluators["test"])
        results["seconds"][_slug(variant.name)] = time.perf_counter() - started
        log(f"seed {seed}: {variant.name}: " + ", ".join(
            f"{k} {v:.3f}" for k, v in results["variants"][variant.name]["test"].items() if k in METRICS))
    write_json(results_path, results)
    return results


def summarize(per_seed: list[dict[str, Any]], which: str = "test") -> list[dict[str, object]]:
    """Mean and sample standard deviation over seeds of each variant's scores (``which``: test or oracle)."""
    rows = []
    for variant in VARIANTS:
        row: dict[str, object] = {"variant": variant.name}
        for metric in METRICS:
            values = [r["variants"][variant.name][which][metric] for r in per_seed if metric in r["variants"][variant.name][which]]
            # float: an undefined score (NaN, or null in a re-read results.json) stays NaN in the mean
            values = np.asarray(values, dtype=np.float64)
            if values.size:
                row[metric] = float(np.mean(values))
                row[f"{metric}_std"] = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
        rows.append(row)
    return rows


def markdown_table(rows: list[dict[str, object]], seeds: int) -> str:
    """Percentages, mean ± std over seeds."""
    head = "| variant | " + " | ".join(METRICS) + " |\n|---|" + "---|" * len(METRICS) + "\n"
    lines = []
    for row in rows:
        cells = []
        for metric in METRICS:
            if metric in row:
                cells.append(f"{100 * row[metric]:.1f} ± {100 * row[f'{metric}_std']:.1f}")
            else:
                cells.append("–")
        lines.append(f"| {row['variant']} | " + " | ".join(cells) + " |")
    return head + "\n".join(lines) + f"\n\n(percent, mean ± std over {seeds} seeds)\n"


def run_ablation(cfg: AblationConfig, out: str | Path, progress: bool = True,
                 log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run (or continue) the ablation in ``out``; writes ``ablation.json``, ``ablation.md`` and ``report.html``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    config_text = dump_yaml(cfg)
    config_path = out / "config.yaml"
    if config_path.exists() and config_path.read_text() != config_text:
        raise ScarceError(f"{config_path}: this folder holds an ablation with another configuration; use another --out")
    write_text(config_path, config_text)
    data_root = Path(cfg.data_root) if cfg.data_root else out / "data"
    started = time.perf_counter()
    if cfg.data_root is None and not (data_root / "scenes.json").exists():
        generate_scenes(cfg.scenes, data_root, progress=progress)
    per_seed = [_run_seed(cfg, seed, data_root, out / f"seed{seed}", progress, log) for seed in cfg.seeds]
    test_rows, oracle_rows = summarize(per_seed, "test"), summarize(per_seed, "oracle")
    summary = {
        "protocol": PROTOCOL.format(held_out="scenes val", test="scenes test"),
        "setup": {
            "data": f"scenes benchmark ({cfg.scenes.n} images of {cfg.scenes.image_size} px, split "
                    f"{'/'.join(str(f) for f in cfg.scenes.split_fractions)}), data seed {cfg.scenes.seed}",
            "model": f"{cfg.model.backbone} (pretrained={cfg.model.pretrained}, output stride {cfg.model.output_stride})",
            "training": f"{cfg.train.epochs} epochs, batch {cfg.train.batch_size}, lr {cfg.train.lr}; seeds {list(cfg.seeds)}",
            "cams": f"{cfg.cam.method}, scales {list(cfg.cam.scales)}, flip {cfg.cam.flip}; PaS percentile {cfg.percentile}; "
                    f"TAP tau {cfg.tap_tau}",
            "metrics": f"score-map thresholds every {cfg.metrics.interval}, box convention {cfg.metrics.convention}, "
                       f"V2 IoU {list(cfg.metrics.iou_thresholds)}; cases = (image, ground-truth class) pairs",
        },
        "test": test_rows,
        "oracle": oracle_rows,
        "per_seed": per_seed,
        "seconds": time.perf_counter() - started,
        "environment": environment(),
    }
    table = markdown_table(test_rows, len(per_seed))
    oracle = markdown_table(oracle_rows, len(per_seed))
    write_json(out / "ablation.json", summary)
    write_text(out / "ablation.md", f"Protocol: {summary['protocol']}.\n\n{table}\nOracle (best threshold on test; "
                                     f"an upper bound, not a result):\n\n{oracle}")
    _report(summary, out / "report.html")
    return summary


def _report(summary: dict[str, Any], path: Path) -> None:
    from scarce.report.html import HtmlReport

    report = HtmlReport("WSOL ablation on scenes: CAM → +PaS → +NWC → +TAP", summary["protocol"])
    for key, text in summary["setup"].items():
        report.paragraph(f"{key}: {text}")
    for which, title in (("test", "Test split at thresholds chosen on val"),
                         ("oracle", "Oracle: best threshold on test (upper bound, not a result)")):
        rows = []
        for row in summary[which]:
            rows.append({"variant": row["variant"], **{m: row[m] for m in METRICS if m in row}})
        report.table(rows, caption=f"{title} (fractions, mean over seeds)")
    report.save(path)


__all__ = ["AblationConfig", "VARIANTS", "Variant", "run_ablation", "summarize", "markdown_table",
           "METRICS"]
