"""The WSSS pipeline, top to bottom: image-level labels → classifier → CAMs → refinement → pseudo masks → scores.

The pipeline is the list :data:`STAGES`; each stage declares what it reads and writes in the run folder
(:class:`scarce.layout.RunLayout` names every path) and is skipped when what it writes is complete, so a
killed run continues where it stopped (training from its last checkpoint, CAMs and refined maps image by
image). A stage that runs makes every later stage run again (each still reuses its finished per-image files).

    data      generate the scenes benchmark (data.kind = scenes without a root)
    train     the classifier                                            → train/model.pt
    cams      seed CAMs of val and test, and of train when refinement or train masks need them → cams/<split>
    evaluate  background threshold chosen on val, scored on test          → scores/seeds.json
    refine    the ``refine:`` chain on every CAM split; its own threshold chosen on val, scored on test
                                                                          → refined/<split>, scores/refined.json
    masks     pseudo masks of ``eval.mask_splits`` (and train, for the segmentation model) from the refined maps
              (else the seeds) at the val-chosen threshold, scored against each split's ground truth
              ("mask mIoU (train)")                                       → masks/<split>
    segment   DeepLabV3+ trained on the train split's pseudo masks (``segment:``), scored on val and test
                                                                          → segment/, scores/segmentation.json
    ceiling   the same model and recipe trained on the train split's ground-truth masks: the fully
              supervised ceiling (``segment.ceiling``)                    → ceiling/, scores/ceiling.json
    report    metrics.json (the seeds' keys at the top level, each later stage's scores under its name) and
              report.html

A further stage is one more :class:`Stage` in :data:`STAGES`; one with ``scores=NAME`` that writes
``scores/NAME.json`` appears in metrics.json under NAME.

Several processes (``torchrun --nproc-per-node N -m scarce run``; docs/scaling.md): a stage marked
``sharded`` runs in every rank and splits its work itself (training: each rank's part of every batch;
CAMs, refined maps and masks: whole batches of images dealt round-robin, each file written atomically by
the rank that made it); every other stage (data, scoring, report) runs in rank 0 while the others wait.
Rank 0 holds the folder's lock (``.lock``) and writes configs, scores, markers and reports.

Protocol: every threshold is chosen on the validation split and applied to the split being scored; the
sweep on the test split itself (its maximum is the oracle Peak IoU) is reported separately, labelled as an
oracle. No setting is tuned on test ground truth, and masks of the train split never see its ground truth.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from scarce.cams import CamConfig, CamExtractor, CamMethod, build_cam_method
from scarce.cams.store import load_cam, save_cam
from scarce.config import from_dict, load_yaml, merge, store_run_config, to_dict
from scarce.data.base import Sample, WeakDataset, open_dataset, same_size_groups
from scarce.data.scenes import ScenesConfig, generate_scenes
from scarce.distributed import barrier, main_first, on_main, prepare_on_ranks, resolve_device, shard, world
from scarce.errors import ConfigError, DataError, ScarceError
from scarce.io import IGNORE_INDEX, read_json, read_label_png, write_json
from scarce.layout import COMPLETE, RunLayout, clear_complete, is_complete, mark_complete
from scarce.lock import run_lock
from scarce.metrics.segmentation import SegmentationEvaluator, ThresholdSweep
from scarce.models.classifier import CamClassifier, ModelConfig, build_classifier
from scarce.provenance import environment
from scarce.pseudo.masks import cams_to_confident_labels, cams_to_labels, save_label_png
from scarce.refinement import RefineContext, Refiner, RefinerChain, RefineStep
from scarce.report.wsss import write_report
from scarce.segmentation import GROUND_TRUTH, MaskSource, SegmentConfig, evaluate_split, load_segmenter, train_segmenter
from scarce.training import TrainConfig, build_objective, load_trained, to_tensor, train_classifier

import scarce.methods  # noqa: E402,F401  (registers the CAM method family's objectives and CAM methods)

ROLES = ("train", "val", "test")
SCORES_OF_MAPS = {"cams": "seeds", "refined": "refined"}  # the scores/<name>.json holding each map kind's threshold


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
    # which splits get pseudo masks, by role (train / val / test): "train" gives the masks a segmentation model
    # learns from, scored as "mask mIoU (train)"; "test" the masks of the report's gallery
    mask_splits: tuple[str, ...] = ("test",)
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
    # refiners applied in order to the seed CAMs (``[pamr, {name: crf, options: {...}}]``); empty: seeds only
    refine: tuple[RefineStep, ...] = ()
    eval: EvalConfig = field(default_factory=EvalConfig)
    # the segmentation model trained on the train split's pseudo masks (and its ceiling); None: no such stage
    segment: SegmentConfig | None = None


# `scarce demo` (`make demo`): RunConfig's defaults plus the ladder's later stages, sized to finish within
# 10 minutes on 2 CPU cores: the dense CRF (the refiner with the best val mIoU in the ladder benchmark, and one
# of the cheapest: no training; it needs the `crf` extra, which `make demo` installs) and a short
# segmentation schedule with single-scale + flip inference. The ladder benchmark (docs/benchmarks.md) trains
# the segmentation model to convergence instead.
DEMO_LADDER: dict[str, Any] = {
    "refine": ["crf"],
    "segment": {"train": {"epochs": 5}, "scales": [1.0]},
}


def demo_config(settings: dict[str, Any] | None = None) -> RunConfig:
    """The demo's config: :data:`DEMO_LADDER` over the defaults, then ``settings`` (a YAML's, ``--set``'s)."""
    return load_run_config(None, merge(DEMO_LADDER, settings or {}))


def load_run_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> RunConfig:
    data = load_yaml(path) if path else {}
    return from_dict(RunConfig, merge(data, overrides or {}))


@dataclass(frozen=True)
class Stage:
    """One step of the pipeline: the paths it reads and writes, and the method of :class:`Run` that makes them.

    A stage is complete when every path of ``writes`` exists; ``enabled`` says whether the config asks for
    it; ``scores`` names its ``scores/<name>.json``, merged into metrics.json under that key. A ``sharded``
    stage runs in every process of a torchrun job and splits its work itself; any other runs in rank 0 only.
    """

    name: str
    execute: Callable[["Run"], None]
    reads: Callable[["Run"], list[Path]] = lambda run: []
    writes: Callable[["Run"], list[Path]] = lambda run: []
    enabled: Callable[["Run"], bool] = lambda run: True
    scores: str | None = None
    sharded: bool = False

    def complete(self, run: "Run") -> bool:
        return all(path.exists() for path in self.writes(run))


class Run:
    """A run folder and the stages that fill it."""

    def __init__(self, cfg: RunConfig, folder: str | Path, progress: bool = True,
                 stages: Sequence[Stage] | None = None) -> None:
        self.cfg, self.progress = cfg, progress
        self.layout = RunLayout(Path(folder))
        self.folder = self.layout.root
        self.stages = tuple(STAGES if stages is None else stages)
        self.timings: dict[str, float | None] = {}  # None: unknown (see TrainResult.seconds)
        self.resume = True
        self._trained: tuple[CamClassifier, torch.nn.Module] | None = None
        self.prepared_method: CamMethod | None = None

    # -- the pipeline -------------------------------------------------------------------------------
    def run(self, resume: bool = True, until: str | None = None, report: bool = True) -> dict[str, Any]:
        """Run every enabled stage (up to and including ``until``) whose outputs are not complete yet.

        ``resume=False`` refuses to continue an interrupted classifier training (its checkpoint);
        ``report=False`` leaves out report.html (metrics.json is still written). Returns the metrics.
        """
        names = [stage.name for stage in self.stages]
        if until is not None and until not in names:
            raise ConfigError(f"unknown stage {until!r}; stages: {', '.join(names)}")
        self.resume = resume
        self.folder.mkdir(parents=True, exist_ok=True)
        with run_lock(self.folder):
            main_first(self.write_config)
            ran = False
            for stage in self.stages:
                if stage.enabled(self) and (report or stage.name != "report") and (ran or not stage.complete(self)):
                    missing = [path for path in stage.reads(self) if not path.exists()]
                    if missing:  # a stage list whose order does not match what its stages read
                        raise ScarceError(f"stage {stage.name!r} reads {missing[0]}, which no earlier stage wrote")
                    if stage.sharded:
                        stage.execute(self)
                        barrier()
                    else:
                        on_main(stage.execute, self)
                    on_main(self._save_timings)
                    ran = True
                if stage.name == until:
                    break
            return self.write_metrics()

    def stage(self, name: str) -> Stage:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise ConfigError(f"unknown stage {name!r}; stages: {', '.join(s.name for s in self.stages)}")

    # -- set-up -------------------------------------------------------------------------------------
    def write_config(self) -> None:
        """Store the resolved config; refuse to mix two configurations in one folder."""
        store_run_config(self.layout.config, self.cfg, load_run_config)

    @property
    def data_root(self) -> Path:
        if self.cfg.data.root is not None:
            return Path(self.cfg.data.root)
        if self.cfg.data.kind != "scenes":
            raise ConfigError(f"data.root is required for data.kind={self.cfg.data.kind!r}")
        return self.layout.data

    @property
    def generates_data(self) -> bool:
        return self.cfg.data.kind == "scenes" and self.cfg.data.root is None

    def prepare_data(self) -> None:
        if self.generates_data and not (self.data_root / "scenes.json").exists():
            with self._timed("data"):
                generate_scenes(self.cfg.data.scenes, self.data_root, progress=self.progress)

    def split(self, role: str) -> str:
        """The split name of a role (train / val / test)."""
        data = self.cfg.data
        return {"train": data.train_split, "val": data.val_split, "test": data.test_split}[role]

    def dataset(self, split: str, allow_empty: bool = False) -> WeakDataset:
        return open_dataset(self.cfg.data.kind, self.data_root, split, allow_empty=allow_empty)

    def scored_dataset(self, split: str) -> WeakDataset:
        """A split that chooses or receives a score; an empty one is an error naming it (not a TypeError later)."""
        dataset = self.dataset(split, allow_empty=True)
        if not dataset.samples:
            raise ScarceError(f"{self.data_root}: split {split!r} has no images; the pipeline chooses thresholds on "
                              f"{self.cfg.data.val_split!r} and scores {self.cfg.data.test_split!r}, so both need images")
        return dataset

    # -- training -----------------------------------------------------------------------------------
    @property
    def model_path(self) -> Path:
        """The classifier this run's CAMs come from (a comparison's inference-only method reads another run's)."""
        return self.layout.model

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
        if not self.model_path.exists():
            identity = {"model": to_dict(self.cfg.model), "objective_options": self.cfg.objective_options,
                        "classes": list(train_set.class_names)}
            result = train_classifier(model, train_set, self.cfg.train, self.layout.train, objective,
                                      resume=resume, identity=identity, progress=self.progress, on_step=on_step)
            self.timings["train"] = result.seconds
        load_trained(model, self.model_path, objective)
        device = resolve_device(self.cfg.train.device)  # CAMs and refiners run where the classifier trained
        model.to(device)
        objective.to(device)
        self._trained = (model, objective)
        return model, objective

    def train_stage(self) -> None:
        """Check the scored splits (before hours of training, not at the sweep), then train the classifier."""
        for split in (self.cfg.data.val_split, self.cfg.data.test_split):
            self.scored_dataset(split)
        self.trained()

    def trained(self) -> tuple[CamClassifier, torch.nn.Module]:
        """The trained classifier and its objective, loaded (or trained) once per :class:`Run`."""
        if self._trained is None:
            self.train(resume=self.resume)
        assert self._trained is not None
        return self._trained

    # -- CAMs ---------------------------------------------------------------------------------------
    def cam_method(self, model: CamClassifier, objective: torch.nn.Module) -> CamMethod:
        method = build_cam_method(self.cfg.cam)
        bind = getattr(method, "bind", None)
        if bind is not None:  # methods that read trained extra modules (e.g. ReCAM's second classifier)
            bind(objective)
        with self._timed("prepare"):  # every rank fits its share, or rank 0 fits and caches it (prepare_on_ranks)
            prepare_on_ranks(method, model, self.dataset(self.cfg.data.train_split), self.layout.cam_prepare)
        return method

    def prepared_cam_method(self) -> CamMethod:
        """The CAM method fitted on the training split, prepared once per :class:`Run`."""
        if self.prepared_method is None:
            self.prepared_method = self.cam_method(*self.trained())
        return self.prepared_method

    def cam_splits(self) -> list[str]:
        """Splits that need CAMs: val and test always; train when refinement or train masks read it."""
        roles = {"val", "test", *self.mask_roles}
        if self.cfg.refine:  # trainable refiners (the affinity network) learn from the train split's seeds
            roles.add("train")
        return list(dict.fromkeys(self.split(role) for role in ROLES if role in roles))

    def extract_cams(self, split: str, model: CamClassifier | None = None, method: CamMethod | None = None) -> Path:
        """Seed CAMs of a split (skipped when complete, resumed image by image otherwise)."""
        out = self.layout.cams(split)
        if is_complete(out):
            return out
        if model is None:
            model, method = self.trained()[0], self.prepared_cam_method()
        dataset = self.dataset(split, allow_empty=True)
        with self._timed(f"cam_{split}"):
            extract_cams(model, dataset, self.cfg.cam, out, method=method, progress=self.progress)
        finish_folder(out)
        return out

    def write_cams(self) -> None:
        for split in self.cam_splits():
            self.extract_cams(split)

    # -- scoring ------------------------------------------------------------------------------------
    def sweep(self, split: str, kind: str = "cams") -> ThresholdSweep:
        """mIoU of the ``kind`` maps (cams or refined) of a split at every background threshold of the grid."""
        dataset = self.scored_dataset(split)
        folder = self.layout.maps(kind, split)
        sweep = ThresholdSweep(dataset.num_classes + 1, self.cfg.eval.thresholds())
        for sample in tqdm(dataset.samples, desc=f"sweep {kind} {split}", unit="img", disable=not self.progress,
                           leave=False):
            maps, keys = load_cam(self.layout.map_file(folder, sample.stem))
            sweep.update(maps, keys, dataset.load_mask(sample))
        return sweep

    def score_maps(self, kind: str = "cams") -> dict[str, Any]:
        """Choose the background threshold of the ``kind`` maps on val, score test with it; test's oracle apart."""
        val, test = self.cfg.data.val_split, self.cfg.data.test_split
        val_curve = self.sweep(val, kind).compute()
        chosen = float(val_curve["best_threshold"])
        test_sweep = self.sweep(test, kind)
        test_curve = test_sweep.compute()
        at_chosen = test_sweep.evaluator_at(chosen)
        return {
            "threshold": chosen,
            "val_peak_miou": float(val_curve["best_miou"]),
            "test": {"miou": at_chosen["miou"], "iou": at_chosen["iou"], "fp": at_chosen["fp"], "fn": at_chosen["fn"],
                     "precision": at_chosen["precision"], "recall": at_chosen["recall"]},
            "test_oracle": {"peak_iou": float(test_curve["best_miou"]), "threshold": float(test_curve["best_threshold"])},
            "curves": {"thresholds": list(map(float, test_curve["thresholds"])),
                       "val_miou": list(map(float, val_curve["miou"])), "test_miou": list(map(float, test_curve["miou"]))},
        }

    def evaluate(self) -> dict[str, Any]:
        """The seeds' scores (threshold chosen on val, test scored at it) with the protocol and provenance."""
        val, test = self.cfg.data.val_split, self.cfg.data.test_split
        scores = self.score_maps("cams")
        return {
            "protocol": {
                "threshold_chosen_on": val,
                "scored_on": test,
                "rule": "background plane at threshold t, argmax over [bg, CAMs of the image's classes]",
                "oracle": f"best threshold of the sweep on {test} itself (uses {test} ground truth; for reference only)",
            },
            "data": self.data_provenance(),
            "environment": environment(),
            "classes": ["background", *self.dataset(test, allow_empty=True).class_names],
            **scores,
        }

    def data_provenance(self) -> dict[str, Any]:
        """Where the scored data came from (the scenes differ between the full Fashion-MNIST and the shipped subset)."""
        info: dict[str, Any] = {"kind": self.cfg.data.kind, "root": str(self.data_root)}
        scenes = self.data_root / "scenes.json"
        if self.cfg.data.kind == "scenes" and scenes.is_file():
            info["fashion_mnist"] = read_json(scenes).get("fashion_mnist")
        return info

    def write_scores(self, name: str, scores: dict[str, Any]) -> None:
        write_json(self.layout.scores(name), scores)

    def read_scores(self, name: str) -> dict[str, Any]:
        path = self.layout.scores(name)
        if not path.is_file():
            raise ScarceError(f"{path}: not scored yet (run `scarce run` or the stage that writes it first)")
        return read_json(path)

    # -- refinement ---------------------------------------------------------------------------------
    def confident_thresholds(self, threshold: float) -> tuple[float, float]:
        """Confident (fg, bg) thresholds around a val-chosen one: fg at t + fg_margin, bg at t - bg_margin."""
        ev = self.cfg.eval
        return threshold + ev.fg_margin, max(threshold - ev.bg_margin, 0.0)

    def refine_context(self) -> RefineContext:
        threshold = float(self.read_scores("seeds")["threshold"])
        return RefineContext(
            model=self.trained()[0].eval(), datasets=lambda split: self.dataset(split, allow_empty=True),
            cam_dir=self.layout.cams, work_dir=self.layout.refine_work, train_split=self.cfg.data.train_split,
            val_split=self.cfg.data.val_split, threshold=threshold, confident=self.confident_thresholds(threshold),
            progress=self.progress)

    def refine_splits(self, splits: Sequence[str]) -> None:
        """Refined maps of ``splits`` (their CAMs made first if missing), resumed image by image."""
        todo = [split for split in splits if not is_complete(self.layout.refined(split))]
        if not todo:
            return
        for split in todo:
            self.extract_cams(split)
        chain = RefinerChain(self.cfg.refine)
        with self._timed("refine_prepare"):  # each refiner: trained by every rank, or by rank 0 and then loaded
            prepare_on_ranks(chain, self.refine_context())
        for split in todo:
            out = self.layout.refined(split)
            with self._timed(f"refine_{split}"):
                refine_maps(chain, self.dataset(split, allow_empty=True), self.layout.cams(split), out,
                            self.cfg.cam.batch_size, self.progress)
            finish_folder(out)

    def refine(self) -> None:
        """Refined maps of every CAM split, then their own threshold, chosen on val and scored on test."""
        self.refine_splits(self.cam_splits())
        on_main(lambda: self.write_scores("refined", {"steps": [to_dict(step) for step in self.cfg.refine],
                                                      **self.score_maps("refined")}))

    # -- pseudo masks -------------------------------------------------------------------------------
    @property
    def mask_maps(self) -> str:
        """Pseudo masks come from the refined maps when there are refiners, else from the seeds."""
        return "refined" if self.cfg.refine else "cams"

    def default_mask_thresholds(self) -> tuple[float, tuple[float, float] | None]:
        """The val-chosen threshold of the maps masks are made from, and confident (fg, bg) when asked for."""
        threshold = float(self.read_scores(SCORES_OF_MAPS[self.mask_maps])["threshold"])
        confident = self.confident_thresholds(threshold) if self.cfg.eval.mask_mode == "confident" else None
        return threshold, confident

    def write_masks(self, split: str, threshold: float, confident: tuple[float, float] | None = None,
                    kind: str = "cams") -> Path:
        """Label PNGs of a split from its ``kind`` maps: background below ``threshold``, or with ``confident =
        (fg, bg)``, foreground above fg, background below bg and 255 (ignore) between.

        Files already written from the same maps and thresholds are kept (a killed run resumes); a new source
        rewrites them all (and the masks stage, whose scores then no longer hold, runs again in the next run).
        """
        out = self.layout.masks(split)
        source = {"maps": kind, "threshold": threshold, "confident": list(confident) if confident else None}
        source_path = self.layout.mask_source(split)
        same = source_path.is_file() and read_json(source_path) == source
        if same and is_complete(out):
            return out
        barrier()  # every rank has read the old source before rank 0 replaces it

        def new_source() -> None:
            clear_complete(out)
            if not same and split in map(self.split, self.mask_roles):
                self.layout.scores("masks").unlink(missing_ok=True)  # no longer these files' scores: the stage reruns
            write_json(source_path, source)

        on_main(new_source)
        dataset = self.dataset(split, allow_empty=True)
        maps_dir = self.layout.maps(kind, split)
        for sample in tqdm(shard(dataset.samples), desc=f"masks {split}", unit="img",
                           disable=not (self.progress and world().is_main), leave=False):
            path = self.layout.mask_file(out, sample.stem)
            if same and path.is_file():
                continue
            maps, keys = load_cam(self.layout.map_file(maps_dir, sample.stem))
            labels = cams_to_labels(maps, keys, threshold) if confident is None else \
                cams_to_confident_labels(maps, keys, *confident)
            save_label_png(path, labels)
        finish_folder(out)
        return out

    def score_masks(self, split: str) -> dict[str, Any] | None:
        """Scores of a split's pseudo masks against its ground truth (None without any); pixels a mask leaves
        at 255 (confident masks) are not scored, and ``labelled_fraction`` says how many it labels."""
        dataset = self.dataset(split, allow_empty=True)
        evaluator = SegmentationEvaluator(dataset.num_classes + 1)
        labelled = total = 0
        for sample in dataset.samples:
            if not dataset.has_mask(sample):
                continue
            path = self.layout.mask_file(self.layout.masks(split), sample.stem)
            pred, gt = read_label_png(path), dataset.load_mask(sample).copy()
            if pred.shape != gt.shape:
                raise DataError(path, f"mask shape {pred.shape} differs from the ground truth's {gt.shape} ({sample.stem})")
            gt[pred == IGNORE_INDEX] = IGNORE_INDEX
            try:
                evaluator.update(np.where(pred == IGNORE_INDEX, 0, pred), gt)
            except ValueError as exc:  # labels beyond the classes
                raise DataError(path, f"against the ground truth of {sample.stem}: {exc}") from None
            labelled += int((pred != IGNORE_INDEX).sum())
            total += pred.size
        if total == 0:
            return None
        scores = evaluator.compute()
        return {"split": split, "miou": scores["miou"], "iou": scores["iou"], "fp": scores["fp"], "fn": scores["fn"],
                "precision": scores["precision"], "recall": scores["recall"], "labelled_fraction": labelled / total}

    def pseudo_masks(self, split: str, threshold: float | None = None,
                     confident: tuple[float, float] | None = None, score: bool = True) -> dict[str, Any] | None:
        """Masks of any split (its maps made first if missing) at the given or the val-chosen thresholds; their
        scores against the split's ground truth, or None without one (or with ``score=False``)."""
        if threshold is None and confident is None:
            threshold, confident = self.default_mask_thresholds()
        if self.cfg.refine:
            self.refine_splits([split])
        else:
            self.extract_cams(split)
        self.write_masks(split, threshold if threshold is not None else confident[1], confident, self.mask_maps)
        return self.score_masks(split) if score else None

    def masks(self) -> None:
        """Pseudo masks of :attr:`mask_roles` at the val-chosen thresholds, scored where there is ground truth."""
        threshold, confident = self.default_mask_thresholds()
        scores: dict[str, Any] = {}
        for role in self.mask_roles:
            self.pseudo_masks(self.split(role), threshold, confident, score=False)
            scored = main_first(lambda: self.score_masks(self.split(role)) if world().is_main else None)
            if scored is not None:
                scores[role] = {**scored, "maps": self.mask_maps, "threshold": threshold,
                                "confident": list(confident) if confident else None,
                                "threshold_chosen_on": self.cfg.data.val_split}
        on_main(self.write_scores, "masks", scores)

    @property
    def mask_roles(self) -> tuple[str, ...]:
        """Split roles that get pseudo masks: ``eval.mask_splits``, and train when a segmentation model learns them."""
        roles = self.cfg.eval.mask_splits
        return roles if self.cfg.segment is None or "train" in roles else ("train", *roles)

    # -- segmentation -------------------------------------------------------------------------------
    def segment(self) -> None:
        """DeepLabV3+ on the train split's pseudo masks, scored on val and test (predictions written)."""
        self._segment_on(self.layout.masks(self.cfg.data.train_split), self.layout.segment, "segmentation")

    def ceiling(self) -> None:
        """The same model and recipe on the train split's ground-truth masks: the fully supervised ceiling."""
        self._segment_on(GROUND_TRUTH, self.layout.ceiling, "ceiling")

    def _segment_on(self, masks: MaskSource, folder: Path, name: str) -> None:
        cfg = self.cfg.segment
        assert cfg is not None, "the segment stages run only with a segment: section"
        train_set = self.dataset(self.cfg.data.train_split)
        trained = train_segmenter(cfg, train_set, masks, folder, resume=self.resume, progress=self.progress)
        self.timings[f"{name}_train"] = trained.seconds  # None: resumed from a checkpoint that kept no time
        model = load_segmenter(cfg, train_set.num_classes, trained.model_path)
        trained_on = ("ground-truth masks" if masks is GROUND_TRUTH else
                      f"pseudo masks ({self.mask_maps}, threshold chosen on {self.cfg.data.val_split})")
        scores: dict[str, Any] = {"trained_on": f"{self.cfg.data.train_split}: {trained_on}",
                                  "inference": {"scales": list(cfg.scales), "flip": cfg.flip, "refine": list(cfg.refine)}}
        if not world().is_main:  # the predictions and scores are rank 0's (not sharded)
            return
        for role in ("val", "test"):
            split = self.split(role)
            with self._timed(f"{name}_{split}"):
                scored = evaluate_split(model, self.scored_dataset(split), cfg, self.layout.predictions(folder, split),
                                        progress=self.progress)
            scores[role] = {key: scored[key] for key in ("miou", "iou", "fp", "fn", "precision", "recall")}
        self.write_scores(name, scores)

    # -- results ------------------------------------------------------------------------------------
    def metrics(self) -> dict[str, Any]:
        """The seeds' scores at the top level (their keys predate the ladder), each later stage's under its name."""
        if not self.layout.scores("seeds").is_file():
            return {}
        metrics = self.read_scores("seeds")
        for stage in self.stages:
            if stage.scores not in (None, "seeds") and stage.enabled(self) and self.layout.scores(stage.scores).is_file():
                metrics[stage.scores] = self.read_scores(stage.scores)
        metrics["timings_s"] = self._stored_timings()
        return metrics

    def write_metrics(self) -> dict[str, Any]:
        metrics = self.metrics()
        if metrics and world().is_main:
            write_json(self.layout.metrics, metrics)
        return metrics

    def describe(self) -> str:
        """The run's recipe in one sentence, for the report."""
        cfg = self.cfg
        refine = ", then " + " → ".join(step.name for step in cfg.refine) if cfg.refine else ""
        return (f"Classifier {cfg.model.backbone} (pretrained: {cfg.model.pretrained}), objective {cfg.objective}, "
                f"CAM method {cfg.cam.method}, scales {list(cfg.cam.scales)}, flip {cfg.cam.flip}, "
                f"normalisation {cfg.cam.normalize}{refine}.")

    def report(self) -> None:
        write_report(self.layout, self.write_metrics(), self.describe(), self.dataset(self.cfg.data.test_split,
                     allow_empty=True), self.cfg.eval.gallery)

    def _timed(self, name: str) -> "_Timer":
        return _Timer(self.timings, name)

    def _stored_timings(self) -> dict[str, float]:
        return {**(read_json(self.layout.timings) if self.layout.timings.is_file() else {}), **self.timings}

    def _save_timings(self) -> None:
        write_json(self.layout.timings, self._stored_timings())


class _Timer:
    def __init__(self, store: dict[str, float], name: str) -> None:
        self.store, self.name = store, name

    def __enter__(self) -> None:
        self.start = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self.store[self.name] = self.store.get(self.name, 0.0) + time.perf_counter() - self.start


def _markers(run: Run, kind: str) -> list[Path]:
    """The ``_complete`` markers of the ``kind`` maps (cams, refined) of every split that needs CAMs."""
    return [run.layout.maps(kind, split) / COMPLETE for split in run.cam_splits()]


def _mask_markers(run: Run) -> list[Path]:
    return [run.layout.masks(run.split(role)) / COMPLETE for role in run.mask_roles]


# The pipeline, in order.
STAGES: tuple[Stage, ...] = (
    Stage("data", Run.prepare_data, writes=lambda run: [run.data_root / "scenes.json"] if run.generates_data else []),
    Stage("train", Run.train_stage, writes=lambda run: [run.model_path], sharded=True),
    Stage("cams", Run.write_cams, reads=lambda run: [run.model_path], writes=lambda run: _markers(run, "cams"),
          sharded=True),
    Stage("evaluate", lambda run: run.write_scores("seeds", run.evaluate()), scores="seeds",
          reads=lambda run: _markers(run, "cams"), writes=lambda run: [run.layout.scores("seeds")]),
    Stage("refine", Run.refine, enabled=lambda run: bool(run.cfg.refine), scores="refined",
          reads=lambda run: [run.layout.scores("seeds"), *_markers(run, "cams")],
          writes=lambda run: [*_markers(run, "refined"), run.layout.scores("refined")], sharded=True),
    Stage("masks", Run.masks, enabled=lambda run: bool(run.mask_roles), scores="masks",
          reads=lambda run: [run.layout.scores(SCORES_OF_MAPS[run.mask_maps])],
          writes=lambda run: [*_mask_markers(run), run.layout.scores("masks")], sharded=True),
    Stage("segment", Run.segment, enabled=lambda run: run.cfg.segment is not None, scores="segmentation",
          reads=lambda run: [run.layout.masks(run.cfg.data.train_split) / COMPLETE],
          writes=lambda run: [run.layout.scores("segmentation")], sharded=True),
    Stage("ceiling", Run.ceiling, enabled=lambda run: run.cfg.segment is not None and run.cfg.segment.ceiling,
          scores="ceiling", writes=lambda run: [run.layout.scores("ceiling")], sharded=True),
    Stage("report", Run.report, reads=lambda run: [run.layout.scores("seeds")],
          writes=lambda run: [run.layout.metrics, run.layout.report]),
)


def finish_folder(folder: Path) -> None:
    """Mark a folder of per-image files complete once every rank has written its files (rank 0 writes it)."""
    barrier()
    on_main(mark_complete, folder)


def batches_of_same_size(dataset: WeakDataset, batch_size: int) -> Iterator[list[tuple[Sample, np.ndarray]]]:
    """Group consecutive images of equal size so that a batch is one tensor (scenes are all one size).

    Under torchrun each rank gets every N-th batch (:func:`scarce.distributed.shard`): the grouping is that of
    one process, and an image is loaded only by the rank that processes it.
    """
    for batch in shard(same_size_groups(dataset, batch_size)):
        yield [(sample, dataset.load_image(sample)) for sample in batch]


def extract_cams(model: CamClassifier, dataset: WeakDataset, cfg: CamConfig, out_dir: str | Path,
                 method: CamMethod | None = None, progress: bool = True) -> None:
    """Write ``<stem>.npz`` CAMs of each image's own classes; images already done are skipped (resumable).

    All classes of a batch come from one pass per scale; only the image's classes are kept, as IRN does.
    """
    out_dir = Path(out_dir)
    extractor = CamExtractor(model, cfg, method)
    device = next(model.parameters()).device
    todo = dataset.subset([s for s in dataset.samples if not RunLayout.map_file(out_dir, s.stem).exists()])
    barrier()  # every rank has listed what is left before any rank writes
    bar = tqdm(total=len(todo.samples), desc=f"cams {dataset.split}", unit="img",
               disable=not (progress and world().is_main), leave=False)
    for batch in batches_of_same_size(todo, cfg.batch_size):
        images = torch.stack([to_tensor(image, model.mean_std) for _, image in batch]).to(device)
        wanted = sorted({c for sample, _ in batch for c in sample.labels})
        extractor.method.begin_images([sample.stem for sample, _ in batch])
        maps = extractor(images, wanted).cpu() if wanted else None
        notes = extractor.method.take_notes()
        if notes and len(notes) != len(batch):
            raise ScarceError(f"CAM method {extractor.method.name!r} recorded notes for {len(notes)} images of a "
                              f"batch of {len(batch)}")
        for i, (sample, _) in enumerate(batch):
            rows = [wanted.index(c) for c in sample.labels]
            cams = maps[i, rows].numpy() if maps is not None and rows else np.zeros((0, *images.shape[-2:]), np.float32)
            save_cam(RunLayout.map_file(out_dir, sample.stem), cams, list(sample.labels), notes[i] if notes else None)
        bar.update(len(batch) * world().size)  # the other ranks progress alike
    bar.close()


def refine_maps(refiner: Refiner, dataset: WeakDataset, cam_dir: Path, out_dir: Path, batch_size: int,
                progress: bool = True) -> None:
    """Write the refined maps of every image of a split whose file is missing (resumable), in the CAMs' format.

    Refiners see raw RGB in [0, 1] (colour affinities read raw colour) and each image's class maps.
    """
    todo = dataset.subset([s for s in dataset.samples if not RunLayout.map_file(out_dir, s.stem).exists()])
    barrier()  # every rank has listed what is left before any rank writes
    bar = tqdm(total=len(todo.samples), desc=f"refine {dataset.split}", unit="img",
               disable=not (progress and world().is_main), leave=False)
    for batch in batches_of_same_size(todo, batch_size):
        images = torch.stack([torch.tensor(image).permute(2, 0, 1).float() / 255.0 for _, image in batch])
        loaded = [load_cam(RunLayout.map_file(cam_dir, sample.stem)) for sample, _ in batch]
        cams = [torch.from_numpy(maps) for maps, _ in loaded]
        keys = [keys.tolist() for _, keys in loaded]
        with torch.no_grad():
            refined = refiner(images, cams, keys)
        for (sample, _), before, after, image_keys in zip(batch, cams, refined, keys):
            if tuple(after.shape) != tuple(before.shape):
                raise ScarceError(f"refiner {refiner.name!r} returned maps of shape {tuple(after.shape)} for "
                                  f"{sample.stem} (expected {tuple(before.shape)})")
            save_cam(RunLayout.map_file(out_dir, sample.stem), after.detach().cpu().float().numpy(), image_keys)
        bar.update(len(batch) * world().size)  # the other ranks progress alike
    bar.close()
