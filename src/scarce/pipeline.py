"""The WSSS pipeline, top to bottom: image-level labels → classifier → CAMs → threshold → pseudo masks → scores.

Stages write their outputs into one run folder and are skipped when their outputs exist, so a killed run
continues where it stopped (training resumes from its last checkpoint with identical results):

    run/config.yaml                 resolved configuration
    run/data/                       the generated scenes benchmark (when data.kind = scenes and no root is given)
    run/train/{model.pt,train_log.csv,checkpoint.pt}
    run/cams/<split>/<stem>.npz     CAMs of the image's classes (float16) with their class keys
    run/masks/<split>/<stem>.png    pseudo masks (VOC palette)
    run/metrics.json, run/report.html

Protocol: the background threshold is chosen on the validation split and applied to the test split; the
sweep on the test split itself (its maximum is the oracle Peak IoU) is reported separately, labelled as an
oracle. No setting is tuned on test ground truth.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from tqdm.auto import tqdm

from scarce.cams import CamConfig, CamExtractor, CamMethod, build_cam_method
from scarce.cams.store import load_cam, save_cam
from scarce.config import changed_keys, dump_yaml, from_dict, load_yaml, to_dict
from scarce.data.base import Sample, WeakDataset, open_dataset
from scarce.data.scenes import ScenesConfig, generate_scenes
from scarce.errors import ConfigError, ScarceError
from scarce.io import read_json, write_json, write_text
from scarce.metrics.segmentation import ThresholdSweep
from scarce.models.classifier import CamClassifier, ModelConfig, build_classifier
from scarce.pseudo.masks import cams_to_confident_labels, cams_to_labels, save_label_png
from scarce.provenance import environment
from scarce.training import TrainConfig, build_objective, load_trained, to_tensor, train_classifier

import scarce.methods  # noqa: E402,F401  (registers the CAM method family's objectives and CAM methods)


@dataclass(frozen=True)
class DataConfig:
    kind: str = "scenes"
    root: str | None = None  # None with kind "scenes": generated inside the run folder
    # 128 px keeps `make demo` within 10 minutes on 2 CPU cores (objects stay 45-96 px wide).
    scenes: ScenesConfig = field(default_factory=lambda: ScenesConfig(image_size=128))
    train_split: str = "train"
    val_split: str = "val"
    test_split: str = "test"


@dataclass(frozen=True)
class EvalConfig:
    threshold_step: float = 0.01  # background thresholds 0, step, ..., < 1 are swept
    fg_margin: float = 0.10  # confident masks: fg at t + fg_margin, bg at t - bg_margin (ReCAM's rule of thumb)
    bg_margin: float = 0.10
    mask_mode: str = "threshold"  # "threshold": one bg threshold; "confident": fg/bg thresholds, 255 between
    gallery: int = 8

    def thresholds(self) -> np.ndarray:
        return np.round(np.arange(0.0, 1.0, self.threshold_step), 6)


@dataclass(frozen=True)
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    objective: str = "cam"
    objective_options: dict[str, Any] = field(default_factory=dict)
    train: TrainConfig = field(default_factory=TrainConfig)
    cam: CamConfig = field(default_factory=CamConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


def load_run_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> RunConfig:
    from scarce.config import merge

    data = load_yaml(path) if path else {}
    return from_dict(RunConfig, merge(data, overrides or {}))


class Run:
    """A run folder and the stages that fill it."""

    def __init__(self, cfg: RunConfig, folder: str | Path, progress: bool = True) -> None:
        self.cfg, self.folder, self.progress = cfg, Path(folder), progress
        self.timings: dict[str, float] = {}

    # -- set-up -------------------------------------------------------------------------------------
    def write_config(self) -> None:
        """Store the resolved config; refuse to mix two configurations in one folder."""
        path = self.folder / "config.yaml"
        changed = changed_keys(load_run_config(path), self.cfg) if path.exists() else []
        if changed:
            raise ScarceError(f"{path}: this run folder was made with another configuration ({', '.join(changed)} "
                              "differ); use another output folder")
        write_text(path, dump_yaml(self.cfg))

    @property
    def data_root(self) -> Path:
        if self.cfg.data.root is not None:
            return Path(self.cfg.data.root)
        if self.cfg.data.kind != "scenes":
            raise ConfigError(f"data.root is required for data.kind={self.cfg.data.kind!r}")
        return self.folder / "data"

    def prepare_data(self) -> None:
        if self.cfg.data.kind == "scenes" and self.cfg.data.root is None and not (self.data_root / "scenes.json").exists():
            with self._timed("data"):
                generate_scenes(self.cfg.data.scenes, self.data_root, progress=self.progress)

    def dataset(self, split: str, allow_empty: bool = False) -> WeakDataset:
        return open_dataset(self.cfg.data.kind, self.data_root, split, allow_empty=allow_empty)

    # -- training -----------------------------------------------------------------------------------
    def build_model(self, num_classes: int) -> tuple[CamClassifier, torch.nn.Module]:
        torch.manual_seed(self.cfg.train.seed)  # the head's initialisation is part of "same seed, same result"
        model = build_classifier(self.cfg.model, num_classes)
        objective = build_objective(self.cfg.objective, num_classes, model.classifier.in_channels,
                                    self.cfg.objective_options)
        return model, objective

    def train(self, resume: bool = True,
              on_step: Callable[[int, int], None] | None = None) -> tuple[CamClassifier, torch.nn.Module]:
        """Train (or finish training) the classifier; return it with its objective (some CAM methods read
        the objective's extra head)."""
        train_set = self.dataset(self.cfg.data.train_split)
        model, objective = self.build_model(train_set.num_classes)
        model_path = self.folder / "train" / "model.pt"
        if not model_path.exists():
            identity = {"model": to_dict(self.cfg.model), "objective_options": self.cfg.objective_options,
                        "classes": list(train_set.class_names)}
            result = train_classifier(model, train_set, self.cfg.train, self.folder / "train", objective,
                                      resume=resume, identity=identity, progress=self.progress, on_step=on_step)
            self.timings["train"] = result.seconds
        load_trained(model, model_path, objective)
        return model, objective

    # -- CAMs ---------------------------------------------------------------------------------------
    def cam_method(self, model: CamClassifier, objective: torch.nn.Module) -> CamMethod:
        method = build_cam_method(self.cfg.cam)
        bind = getattr(method, "bind", None)
        if bind is not None:  # methods that read trained extra modules (e.g. ReCAM's second classifier)
            bind(objective)
        method.prepare(model, self.dataset(self.cfg.data.train_split), self.folder / "cams" / "_prepare")
        return method

    def extract_cams(self, split: str, model: CamClassifier | None = None, method: CamMethod | None = None) -> Path:
        out = self.folder / "cams" / split
        done = out / "_complete"
        if done.exists():
            return out
        if model is None:
            model, objective = self.train(resume=False)
            method = self.cam_method(model, objective)
        dataset = self.dataset(split, allow_empty=True)
        with self._timed(f"cam_{split}"):
            extract_cams(model, dataset, self.cfg.cam, out, method=method, progress=self.progress)
        write_text(done, "")
        return out

    # -- scoring ------------------------------------------------------------------------------------
    def sweep(self, split: str) -> ThresholdSweep:
        dataset = self.dataset(split, allow_empty=True)
        sweep = ThresholdSweep(dataset.num_classes + 1, self.cfg.eval.thresholds())
        for sample in dataset.samples:
            cams, keys = load_cam(self.folder / "cams" / split / f"{sample.stem}.npz")
            sweep.update(cams, keys, dataset.load_mask(sample))
        return sweep

    def evaluate(self) -> dict[str, Any]:
        """Choose the background threshold on val, score test with it; report the test oracle separately."""
        val, test = self.cfg.data.val_split, self.cfg.data.test_split
        val_curve = self.sweep(val).compute()
        chosen = float(val_curve["best_threshold"])
        test_sweep = self.sweep(test)
        test_curve = test_sweep.compute()
        at_chosen = test_sweep.evaluator_at(chosen)
        class_names = ["background", *self.dataset(test, allow_empty=True).class_names]
        return {
            "protocol": {
                "threshold_chosen_on": val,
                "scored_on": test,
                "rule": "background plane at threshold t, argmax over [bg, CAMs of the image's classes]",
                "oracle": f"best threshold of the sweep on {test} itself (uses {test} ground truth; for reference only)",
            },
            "data": self.data_provenance(),
            "environment": environment(),
            "classes": class_names,
            "threshold": chosen,
            "val_peak_miou": float(val_curve["best_miou"]),
            "test": {"miou": at_chosen["miou"], "iou": at_chosen["iou"], "fp": at_chosen["fp"], "fn": at_chosen["fn"],
                     "precision": at_chosen["precision"], "recall": at_chosen["recall"]},
            "test_oracle": {"peak_iou": float(test_curve["best_miou"]), "threshold": float(test_curve["best_threshold"])},
            "curves": {"thresholds": list(map(float, test_curve["thresholds"])),
                       "val_miou": list(map(float, val_curve["miou"])), "test_miou": list(map(float, test_curve["miou"]))},
        }

    def data_provenance(self) -> dict[str, Any]:
        """Where the scored data came from (the scenes differ between the full Fashion-MNIST and the shipped subset)."""
        info: dict[str, Any] = {"kind": self.cfg.data.kind, "root": str(self.data_root)}
        scenes = self.data_root / "scenes.json"
        if self.cfg.data.kind == "scenes" and scenes.is_file():
            info["fashion_mnist"] = read_json(scenes).get("fashion_mnist")
        return info

    def write_masks(self, split: str, threshold: float, confident: tuple[float, float] | None = None) -> Path:
        """Label PNGs of a split: background below ``threshold``, or with ``confident = (fg, bg)`` thresholds,
        foreground above fg, background below bg and 255 (ignore) between."""
        out = self.folder / "masks" / split
        dataset = self.dataset(split, allow_empty=True)
        for sample in dataset.samples:
            cams, keys = load_cam(self.folder / "cams" / split / f"{sample.stem}.npz")
            labels = cams_to_labels(cams, keys, threshold) if confident is None else \
                cams_to_confident_labels(cams, keys, *confident)
            save_label_png(out / f"{sample.stem}.png", labels)
        return out

    def default_masks(self, split: str, threshold: float) -> Path:
        ev = self.cfg.eval
        confident = (threshold + ev.fg_margin, max(threshold - ev.bg_margin, 0.0)) if ev.mask_mode == "confident" else None
        return self.write_masks(split, threshold, confident)

    # -- everything ---------------------------------------------------------------------------------
    def run(self, resume: bool = True) -> dict[str, Any]:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.write_config()
        self.prepare_data()
        model, objective = self.train(resume=resume)
        method = self.cam_method(model, objective)
        for split in (self.cfg.data.val_split, self.cfg.data.test_split):
            self.extract_cams(split, model, method)
        metrics = self.evaluate()
        self.default_masks(self.cfg.data.test_split, metrics["threshold"])
        metrics["timings_s"] = self.timings
        write_json(self.folder / "metrics.json", metrics)
        from scarce.report.wsss import write_report

        write_report(self, metrics)
        return metrics

    def _timed(self, name: str) -> "_Timer":
        return _Timer(self.timings, name)


class _Timer:
    def __init__(self, store: dict[str, float], name: str) -> None:
        self.store, self.name = store, name

    def __enter__(self) -> None:
        self.start = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self.store[self.name] = self.store.get(self.name, 0.0) + time.perf_counter() - self.start


def batches_of_same_size(dataset: WeakDataset, batch_size: int) -> Iterator[list[tuple[Sample, np.ndarray]]]:
    """Group consecutive images of equal size so that a batch is one tensor (scenes are all one size)."""
    batch: list[tuple[Sample, np.ndarray]] = []
    for sample in dataset.samples:
        image = dataset.load_image(sample)
        if batch and (len(batch) == batch_size or batch[0][1].shape != image.shape):
            yield batch
            batch = []
        batch.append((sample, image))
    if batch:
        yield batch


def extract_cams(model: CamClassifier, dataset: WeakDataset, cfg: CamConfig, out_dir: str | Path,
                 method: CamMethod | None = None, progress: bool = True) -> None:
    """Write ``<stem>.npz`` CAMs of each image's own classes; images already done are skipped (resumable).

    All classes of a batch come from one pass per scale; only the image's classes are kept, as IRN does.
    """
    out_dir = Path(out_dir)
    extractor = CamExtractor(model, cfg, method)
    todo = dataset.subset([s for s in dataset.samples if not (out_dir / f"{s.stem}.npz").exists()])
    bar = tqdm(total=len(todo.samples), desc=f"cams {dataset.split}", unit="img", disable=not progress, leave=False)
    for batch in batches_of_same_size(todo, cfg.batch_size):
        images = torch.stack([to_tensor(image, model.mean_std) for _, image in batch])
        wanted = sorted({c for sample, _ in batch for c in sample.labels})
        maps = extractor(images, wanted) if wanted else None
        for i, (sample, _) in enumerate(batch):
            rows = [wanted.index(c) for c in sample.labels]
            cams = maps[i, rows].numpy() if maps is not None and rows else np.zeros((0, *images.shape[-2:]), np.float32)
            save_cam(out_dir / f"{sample.stem}.npz", cams, list(sample.labels))
        bar.update(len(batch))
    bar.close()
