"""A single-stage run: train RS (+ a mixing method) once, score the decoder, and optionally the multi-stage route.

Run folder (every stage is skipped when its output exists; training resumes from its last checkpoint)::

    run/config.yaml                         the resolved SingleStageConfig
    run/data/                               the generated scenes (data.kind = scenes without a root)
    run/train/{model.pt,checkpoint.pt,train_log.csv}
    run/predictions/<split>/<stem>.png      single-stage predictions of val and test
    run/single_stage.json                   their scores
    run/seeds.json                          the seeds M_rs of the trained network on train (the ablation's maps)
    run/pseudo/train/<stem>.png             the decoder's maps of train = the multi-stage pseudo masks
    run/pseudo/train/_scores.json           their scores against train ground truth
    run/segment/                            the DeepLabV3+ of scarce.segmentation trained on them (multi_stage)
    run/segment/pred/<split>/<stem>.png     its predictions of val and test
    run/multi_stage.json, run/metrics.json
    run/timings.json                        seconds per stage, kept across resumed invocations
    run/report.html                         the ladder of these outputs, losses and a gallery of test images

Protocol (no setting is chosen on test ground truth):

- single stage: the decoder's softmax averaged over ``infer.scales`` and their flips (``infer_rsepm.py``:
  1.0, 0.5, 1.5, 2.0 + flip); classes are those whose classification score σ(GAP), averaged over the same
  views, is ≥ ``infer.class_threshold`` (the README's ``--conf_th 0.34``; null = all classes); each pixel
  takes the argmax over background and those classes; ``infer.refine: [crf]`` refines the result with
  :mod:`scarce.refinement`'s CRF. Nothing is thresholded on ground truth; scored on val and test;
- seeds (the seed's ablation "RS / +SCG / +PAMR", mIoU, FP, FN of the maps): M_rs of the trained network on
  train, with the background threshold chosen on val (scarce's CAM protocol);
- multi stage: the decoder maps of train restricted to each image's labelled classes (image-level labels are
  the supervision, so using them on train is legitimate; the seed's "*" decoder-map rows) are the pseudo masks,
  fed to :func:`scarce.segmentation.train_segmenter`, whose model is scored on val and test with ``segment``'s
  own inference settings.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from scarce.config import from_dict, load_yaml, merge, store_run_config
from scarce.data.base import WeakDataset, open_dataset
from scarce.data.scenes import generate_scenes
from scarce.errors import ConfigError, ScarceError
from scarce.io import read_json, save_label_png, write_json
from scarce.metrics.segmentation import SegmentationEvaluator, ThresholdSweep
from scarce.pipeline import DataConfig, EvalConfig
from scarce.refinement import Refiner, RefinerChain
from scarce.segmentation import SegmentConfig, evaluate_split, load_segmenter, predict_probabilities, train_segmenter
from scarce.segmentation.predict import refine_prediction
from scarce.singlestage.network import DecoderView, NetworkConfig, SingleStageNet, build_network
from scarce.singlestage.objective import MixConfig, SingleStageObjective
from scarce.singlestage.recurseed import RecurSeedConfig, SeedMaker, class_keys, normalised_cams, to_rgb
from scarce.training import TrainConfig, load_trained, to_tensor, train_classifier


@dataclass(frozen=True)
class InferConfig:
    scales: tuple[float, ...] = (1.0, 0.5, 1.5, 2.0)  # infer_rsepm.py
    flip: bool = True
    class_threshold: float | None = 0.34  # README's --conf_th for val/test; null: every class competes
    refine: tuple[str, ...] = ()  # e.g. [crf] (the official single-stage results use a CRF)


PIPELINE = "single_stage"  # the value of a config's `pipeline:` key that makes `scarce run` train this network


@dataclass(frozen=True)
class SingleStageConfig:
    # `scarce run CONFIG` reads this key to tell a single-stage config from one of the CAM pipeline's
    pipeline: str = PIPELINE
    data: DataConfig = field(default_factory=DataConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    # BatchNorm trains (RSEPM builds its backbone with norm_fn 'bn'; the decoder's BN must learn); 20 epochs = the
    # official tag's RS(ep=5) + CM(ep=15)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=20, freeze_bn=False))
    recurseed: RecurSeedConfig = field(default_factory=RecurSeedConfig)
    mix: MixConfig = field(default_factory=MixConfig)
    infer: InferConfig = field(default_factory=InferConfig)
    multi_stage: bool = False
    segment: SegmentConfig = field(default_factory=SegmentConfig)
    gallery: int = 8  # test images shown in report.html

    def __post_init__(self) -> None:
        if self.pipeline != PIPELINE:
            raise ConfigError(f"pipeline must be {PIPELINE!r} in a single-stage config, got {self.pipeline!r}")


def is_single_stage(path: str | Path | None) -> bool:
    """Whether the YAML at ``path`` (its ``base:`` chain resolved) asks for the single-stage pipeline."""
    return path is not None and load_yaml(path).get("pipeline") == PIPELINE


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> SingleStageConfig:
    data = load_yaml(path) if path else {}
    cfg = from_dict(SingleStageConfig, merge(data, overrides or {}))
    if cfg.mix.kind != "none" and cfg.train.batch_size < 2:
        raise ConfigError(f"mix.kind {cfg.mix.kind}: mixing pairs need train.batch_size ≥ 2")
    if cfg.train.augment.crop_size % 16:
        raise ConfigError(f"train.augment.crop_size ({cfg.train.augment.crop_size}) must be a multiple of 16 "
                          "(the decoder's output stride)")
    return cfg


class SingleStageRun:
    """A run folder and the stages that fill it (see the module docstring)."""

    def __init__(self, cfg: SingleStageConfig, folder: str | Path, progress: bool = True) -> None:
        self.cfg, self.folder, self.progress = cfg, Path(folder), progress
        self.timings: dict[str, float | None] = {}

    def record_time(self, stage: str, seconds: float | None) -> None:
        """Write a stage's seconds to ``timings.json`` at once, so that a later, resumed invocation still reports
        them. Training stages pass the trainer's count, which adds up the invocations of a resumed run; None (a
        checkpoint that kept no time) is stored as unknown, never as the resumed part alone."""
        self.timings[stage] = seconds
        write_json(self.folder / "timings.json", self.stored_timings())

    def stored_timings(self) -> dict[str, float | None]:
        path, metrics = self.folder / "timings.json", self.folder / "metrics.json"
        # runs made before timings.json existed kept their timings only in metrics.json: keep those too
        earlier = read_json(metrics).get("timings_s", {}) if metrics.is_file() else {}
        return {**earlier, **(read_json(path) if path.is_file() else {}), **self.timings}

    def write_config(self) -> None:
        """Store the resolved config; refuse a folder made with another one. Until the multi-stage route has
        written anything, ``multi_stage`` and ``segment.*`` may change: a finished single-stage run can add it."""
        started = (self.folder / "multi_stage.json").exists() or (self.folder / "segment").exists()
        store_run_config(self.folder / "config.yaml", self.cfg, load_config,
                         may_change=() if started else ("multi_stage", "segment."))

    @property
    def data_root(self) -> Path:
        data = self.cfg.data
        if data.root is not None:
            return Path(data.root)
        if data.kind != "scenes":
            raise ConfigError(f"data.root is required for data.kind={data.kind!r}")
        return self.folder / "data"

    def dataset(self, split: str) -> WeakDataset:
        return open_dataset(self.cfg.data.kind, self.data_root, split)

    def prepare_data(self) -> None:
        if self.cfg.data.kind == "scenes" and self.cfg.data.root is None and not (self.data_root / "scenes.json").exists():
            generate_scenes(self.cfg.data.scenes, self.data_root, progress=self.progress)

    def build(self, num_classes: int) -> tuple[SingleStageNet, SingleStageObjective]:
        torch.manual_seed(self.cfg.train.seed)  # the heads' initialisation is part of "same seed, same result"
        net = build_network(self.cfg.network, num_classes)
        return net, SingleStageObjective(self.cfg.recurseed, self.cfg.mix, self.cfg.train.epochs)

    def train(self, resume: bool = True, on_step: Callable[[int, int], None] | None = None) -> SingleStageNet:
        """Train (or finish training) the network; return it in eval mode."""
        train_set = self.dataset(self.cfg.data.train_split)
        net, objective = self.build(train_set.num_classes)
        model_path = self.folder / "train" / "model.pt"
        if not model_path.exists():
            identity = {"network": asdict(self.cfg.network), "recurseed": asdict(self.cfg.recurseed),
                        "mix": asdict(self.cfg.mix), "classes": list(train_set.class_names)}
            trained = train_classifier(net, train_set, self.cfg.train, self.folder / "train", objective,
                                       resume=resume, identity=identity, progress=self.progress, on_step=on_step,
                                       drop_last=True)
            self.record_time("train", trained.seconds)
        return load_trained(net, model_path)

    def trained(self) -> SingleStageNet:
        """The finished network, for diagnostics that must never train: a run without ``train/model.pt`` is refused."""
        if not (self.folder / "train" / "model.pt").is_file():
            raise ConfigError(f"{self.folder}: no trained network (train/model.pt); finish the run first")
        return self.train()

    def predict(self, view: DecoderView, image: np.ndarray, classes: list[int] | None,
                refiner: Refiner | None) -> np.ndarray:
        """(H, W) uint8 labels of one image: argmax over background and ``classes`` (None: those the classification
        branch predicts at ``infer.class_threshold``, or all), refined when a refiner is given."""
        infer = self.cfg.infer
        probabilities = predict_probabilities(view, to_tensor(image, view.mean_std), infer.scales, infer.flip)
        scores = view.take_class_scores()
        if classes is None:
            threshold = infer.class_threshold
            classes = list(range(len(scores))) if threshold is None else \
                torch.nonzero(scores >= threshold).flatten().tolist()
        keep = torch.zeros(len(probabilities), dtype=torch.bool)
        keep[0] = True
        keep[[c + 1 for c in classes]] = True
        probabilities = torch.where(keep[:, None, None], probabilities, torch.zeros(()))
        labels = probabilities.argmax(dim=0) if refiner is None else refine_prediction(refiner, image, probabilities)
        return labels.numpy().astype(np.uint8)

    def label_split(self, net: SingleStageNet, split: str, out_dir: Path, image_labels: bool) -> dict[str, Any]:
        """Write the labels of a split as ``<stem>.png`` and score them against its ground truth."""
        dataset = self.dataset(split)
        view = DecoderView(net).eval()
        refiner = RefinerChain(self.cfg.infer.refine) if self.cfg.infer.refine else None
        evaluator = SegmentationEvaluator(dataset.num_classes + 1)
        with torch.no_grad():
            for sample in dataset.samples:
                labels = self.predict(view, dataset.load_image(sample), list(sample.labels) if image_labels else None,
                                      refiner)
                save_label_png(out_dir / f"{sample.stem}.png", labels)
                if dataset.has_mask(sample):
                    evaluator.update(labels, dataset.load_mask(sample))
        scores = evaluator.compute()
        return {key: scores[key] for key in ("miou", "iou", "fp", "fn", "precision", "recall")}

    def single_stage(self, net: SingleStageNet) -> dict[str, Any]:
        path = self.folder / "single_stage.json"
        if path.exists():
            return read_json(path)
        for split in (self.cfg.data.val_split, self.cfg.data.test_split):  # fail before the inference, not after
            dataset = self.dataset(split)
            if not any(dataset.has_mask(sample) for sample in dataset.samples):
                raise ScarceError(f"{self.data_root}: split {split!r} has no ground-truth label maps; the single-stage "
                                  "run scores val and test (and chooses the seeds' threshold on val), so both need them")
        started = time.perf_counter()
        scores = {split: self.label_split(net, split, self.folder / "predictions" / split, image_labels=False)
                  for split in (self.cfg.data.val_split, self.cfg.data.test_split)}
        self.record_time("single_stage_inference", time.perf_counter() - started)
        write_json(path, scores)
        return scores

    def pseudo_masks(self, net: SingleStageNet) -> tuple[Path, dict[str, Any]]:
        """RS(+mix) pseudo masks of train, with their scores against train ground truth (for reference)."""
        out = self.folder / "pseudo" / self.cfg.data.train_split
        done = out / "_scores.json"
        if not done.exists():
            write_json(done, self.label_split(net, self.cfg.data.train_split, out, image_labels=True))
        return out, read_json(done)

    def seed_sweep(self, net: SingleStageNet, split: str) -> ThresholdSweep:
        """The threshold sweep of the trained network's seeds M_rs (its CAM → SCG → PAMR, as in training, on the
        image's classes at one scale) over a split."""
        dataset = self.dataset(split)
        make_seeds = SeedMaker(self.cfg.recurseed)
        sweep = ThresholdSweep(dataset.num_classes + 1, EvalConfig().thresholds())
        for sample in dataset.samples:
            _, seeds, keys = self.image_maps(net, make_seeds, dataset, sample)
            sweep.update(seeds, keys, dataset.load_mask(sample))
        return sweep

    @torch.no_grad()
    def image_maps(self, net: SingleStageNet, make_seeds: SeedMaker, dataset: WeakDataset,
                   sample: Any) -> tuple[np.ndarray, np.ndarray, list[int]]:
        """(normalised CAMs M̂_cam, seeds M_rs, classes) of one image's labelled classes, each (K, H, W)."""
        image = to_tensor(dataset.load_image(sample), net.mean_std)[None]
        out = net(image)
        keys = class_keys(torch.from_numpy(dataset.label_vector(sample))[None])
        cams = normalised_cams(out.cams, image.shape[-2:])
        seeds = make_seeds(to_rgb(image, net.mean_std), cams, out.levels, keys)
        return cams[0, keys[0]].numpy(), seeds[0, keys[0]].numpy(), keys[0]

    def seed_scores(self, net: SingleStageNet) -> dict[str, Any]:
        """The seeds' quality on train (the seed's ablation: mIoU, FP, FN of the maps), at the background
        threshold chosen on val, as scarce's CAM protocol."""
        path = self.folder / "seeds.json"
        if path.exists():
            return read_json(path)
        val = self.seed_sweep(net, self.cfg.data.val_split).compute()
        threshold = float(val["best_threshold"])
        train = self.seed_sweep(net, self.cfg.data.train_split).evaluator_at(threshold)
        scores = {"threshold": threshold, "threshold_chosen_on": self.cfg.data.val_split,
                  "val_peak_miou": float(val["best_miou"]),
                  self.cfg.data.train_split: {key: train[key] for key in ("miou", "iou", "fp", "fn")}}
        write_json(path, scores)
        return scores

    def multi_stage(self, net: SingleStageNet, resume: bool = True) -> dict[str, Any]:
        path = self.folder / "multi_stage.json"
        if path.exists():
            return read_json(path)
        masks, mask_scores = self.pseudo_masks(net)
        train_set = self.dataset(self.cfg.data.train_split)
        trained = train_segmenter(self.cfg.segment, train_set, masks, self.folder / "segment", resume=resume,
                                  progress=self.progress)
        self.record_time("segment_train", trained.seconds)
        segmenter = load_segmenter(self.cfg.segment, train_set.num_classes, trained.model_path)
        scores = {"pseudo_masks_train": mask_scores}
        for split in (self.cfg.data.val_split, self.cfg.data.test_split):
            scores[split] = evaluate_split(segmenter, self.dataset(split), self.cfg.segment,
                                           self.folder / "segment" / "pred" / split, progress=self.progress)
        write_json(path, scores)
        return scores

    def run(self, resume: bool = True) -> dict[str, Any]:
        """Every stage; returns (and writes) ``metrics.json``."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self.write_config()
        self.prepare_data()
        net = self.train(resume=resume)
        metrics: dict[str, Any] = {
            "protocol": {"single_stage": "decoder argmax over background and the classes scored ≥ "
                                         f"{self.cfg.infer.class_threshold} by σ(GAP); no threshold chosen on any "
                                         "ground truth",
                         "seeds": "M_rs of the trained network on train, background threshold chosen on val",
                         "decoder_maps": "decoder argmax over background and the image's labelled classes on train",
                         "multi_stage": "pseudo masks = decoder argmax over background and the image's labelled "
                                        "classes on train; DeepLabV3+ trained on them, scored on val and test"},
            "single_stage": self.single_stage(net),
            "seeds": self.seed_scores(net),
            "decoder_maps": self.pseudo_masks(net)[1],
        }
        if self.cfg.multi_stage:
            metrics["multi_stage"] = self.multi_stage(net, resume=resume)
        metrics["timings_s"] = self.stored_timings()
        write_json(self.folder / "metrics.json", metrics)
        self.report(net, metrics)
        return metrics

    def describe(self) -> str:
        """The run's recipe in one sentence, for the report."""
        cfg = self.cfg
        parts = [f"One network: encoder {cfg.network.encoder.backbone} (pretrained: {cfg.network.encoder.pretrained}), "
                 f"CAM branch and DeepLabV3+ decoder, {cfg.train.epochs} epochs",
                 "RecurSeed seeds M_rs = " + {(True, True): "PAMR(SCG(CAM))", (True, False): "SCG(CAM)",
                                              (False, True): "PAMR(CAM)", (False, False): "CAM"}[
                     (cfg.recurseed.use_scg, cfg.recurseed.use_pamr)]]
        if cfg.mix.kind != "none":
            parts.append(f"mixing {cfg.mix.kind} from epoch {cfg.mix.start_epoch}")
        return "; ".join(parts) + "."

    def report(self, net: SingleStageNet, metrics: dict[str, Any]) -> None:
        """report.html: the ladder of this run's outputs, the losses, and test images with their CAM, seeds,
        single-stage prediction and (multi_stage) the segmentation model's."""
        from scarce.io import read_label_png
        from scarce.report.singlestage import write_single_stage_report
        from scarce.report.visual import class_max_heat, colorize_labels, overlay_heatmap

        data = self.cfg.data
        test = self.dataset(data.test_split)
        make_seeds = SeedMaker(self.cfg.recurseed)
        predictions = self.folder / "predictions" / data.test_split
        segmented = self.folder / "segment" / "pred" / data.test_split
        rows = []
        for sample in test.samples[: self.cfg.gallery]:
            image = test.load_image(sample)
            cams, seeds, keys = self.image_maps(net, make_seeds, test, sample)
            names = ", ".join(test.class_names[k] for k in keys)
            row = [(f"{sample.stem}: {names}", image), ("ground truth", colorize_labels(test.load_mask(sample))),
                   ("CAM", overlay_heatmap(image, class_max_heat(cams, image))),
                   ("seeds M_rs", overlay_heatmap(image, class_max_heat(seeds, image))),
                   ("single stage", colorize_labels(read_label_png(predictions / f"{sample.stem}.png")))]
            if (segmented / f"{sample.stem}.png").is_file():
                row.append(("multi stage", colorize_labels(read_label_png(segmented / f"{sample.stem}.png"))))
            rows.append(row)
        splits = {"train": data.train_split, "val": data.val_split, "test": data.test_split}
        write_single_stage_report(self.folder / "report.html", metrics, self.describe(), splits, test.class_names,
                                  self.folder / "train" / "train_log.csv", rows)
