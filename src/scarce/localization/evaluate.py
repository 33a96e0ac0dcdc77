"""Scoring CAMs of a dataset split with the WSOL metrics, under the held-out-threshold protocol.

Maps are those the pipeline writes (``scarce.pipeline.extract_cams``: one ``<stem>.npz`` per image with
the maps of the image's own classes, i.e. the "ground-truth-known" setting of WSOL). Each (image, class)
pair is one case: its map is scored against that class's boxes and against the class's pixels of the
label map (foreground = ``class + 1``, ignore = 255, every other pixel background).

Top-1 localization needs the classifier's prediction: a case's class is "right" when it is among the
image's top-L predicted classes, L being the number of classes the image holds (for single-label data
this is the usual top-1).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from scarce.cams.store import load_cam
from scarce.data.base import IGNORE_INDEX, WeakDataset
from scarce.errors import ConfigError
from scarce.localization.metrics import (
    V2_IOU,
    WsolEvaluator,
    wsolevaluation_box,
    wsolevaluation_mask,
    wsolevaluation_scoremap,
)
from scarce.models.classifier import CamModel
from scarce.training import to_tensor


SCOREMAPS = ("native", "wsolevaluation")


@dataclass(frozen=True)
class WsolMetricsConfig:
    """Settings of the WSOL evaluators (see :mod:`scarce.localization.metrics`).

    ``scoremap``: ``native`` scores each stored map at the image's own size as stored (max-normalised by the
    CAM core); ``wsolevaluation`` first does what clovaai/wsolevaluation does to a map: resize to 224×224
    (bicubic) and min-max normalise, with the ground-truth boxes resized (truncated corners) and the label
    map resized (nearest) to 224×224 as well. ``convention`` (how boxes are read off a map) is separate.
    """

    interval: float = 0.01
    iou_thresholds: tuple[float, ...] = V2_IOU
    convention: str = "wsolevaluation"
    scoremap: str = "native"

    def __post_init__(self) -> None:
        if self.scoremap not in SCOREMAPS:
            raise ConfigError(f"WSOL metrics: scoremap must be one of {', '.join(SCOREMAPS)}, got {self.scoremap!r}")

    def evaluator(self) -> WsolEvaluator:
        return WsolEvaluator(self.interval, self.iou_thresholds, self.convention)


@torch.no_grad()
def predicted_scores(model: CamModel, dataset: WeakDataset, progress: bool = False) -> dict[str, np.ndarray]:
    """Classifier logits (C,) of every image of ``dataset``, keyed by stem (one image at a time: sizes may differ)."""
    model.eval()
    out = {}
    for sample in tqdm(dataset.samples, desc=f"scores {dataset.split}", unit="image", disable=not progress, leave=False):
        image = to_tensor(dataset.load_image(sample), model.mean_std)[None]
        out[sample.stem] = model(image)[0].float().numpy()
    return out


def evaluate_cam_folder(dataset: WeakDataset, cam_dir: str | Path, metrics: WsolMetricsConfig = WsolMetricsConfig(),
                        scores: dict[str, np.ndarray] | None = None, progress: bool = False) -> WsolEvaluator:
    """Feed every (image, class) map under ``cam_dir`` to a fresh evaluator; ``scores`` enable top-1 loc."""
    cam_dir = Path(cam_dir)
    evaluator = metrics.evaluator()
    for sample in tqdm(dataset.samples, desc=f"WSOL metrics {dataset.split}", unit="image", disable=not progress,
                       leave=False):
        if not sample.labels:
            continue
        cams, keys = load_cam(cam_dir / f"{sample.stem}.npz")
        mask = dataset.load_mask(sample) if dataset.has_mask(sample) else None
        top: set[int] | None = None
        if scores is not None:
            top = set(np.argsort(-scores[sample.stem], kind="stable")[: len(sample.labels)].tolist())
        for cam, key in zip(cams, keys.tolist()):
            boxes = [(b.x0, b.y0, b.x1, b.y1) for b in sample.boxes if b.label == key]
            foreground = ignore = None
            if mask is not None:
                foreground, ignore = mask == key + 1, mask == IGNORE_INDEX
            scoremap = np.asarray(cam, dtype=np.float64)
            if metrics.scoremap == "wsolevaluation":  # stored maps are at the image's size
                size = (scoremap.shape[1], scoremap.shape[0])
                scoremap = wsolevaluation_scoremap(scoremap)
                boxes = [wsolevaluation_box(box, size) for box in boxes]
                if mask is not None:
                    foreground, ignore = wsolevaluation_mask(foreground), wsolevaluation_mask(ignore)
            evaluator.update(scoremap, boxes or None, foreground, ignore, None if top is None else key in top)
    return evaluator
