"""Inference: multi-scale + flip softmax, optional refinement (dense CRF), label maps and their scores.

For each scale s the image is resized by s (bilinear), padded at the bottom/right to a multiple of the
network's output stride with 0 (the mean after normalisation, as DeepLab pads), run with its horizontal
flip, the logits cropped, flipped back and resized to the image, and the softmax of every view averaged
(RecurSeed's ``infer_rsepm.py`` averages softmax over scales and flips; DeepLab's evaluation uses the same
multi-scale + flip protocol).

Post-processing through :mod:`scarce.refinement` (``segment.refine: [crf]``): the refiner receives the
image (RGB in [0, 1]) and the softmax maps of the classes present in the prediction, and returns refined
maps of those classes; each pixel then takes the argmax over the model's background probability and the
refined maps. A refiner that returns its input therefore leaves the prediction unchanged. Only refiners
that need no preparation (no :class:`~scarce.refinement.RefineContext`) apply here, e.g. ``crf``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from scarce.data.base import Sample, WeakDataset
from scarce.errors import ScarceError
from scarce.io import save_label_png
from scarce.metrics.segmentation import SegmentationEvaluator
from scarce.refinement import Refiner, RefinerChain
from scarce.segmentation.model import Segmenter
from scarce.segmentation.train import SegmentConfig
from scarce.training.transforms import to_tensor


def _padded_logits(model: Segmenter, images: torch.Tensor) -> torch.Tensor:
    """Logits of (B, 3, h, w) images padded to the model's input multiple, cropped back to (h, w)."""
    h, w = images.shape[-2:]
    multiple = model.input_multiple
    padded = F.pad(images, (0, -w % multiple, 0, -h % multiple))
    return model(padded)[..., :h, :w]


@torch.no_grad()
def predict_probabilities(model: Segmenter, image: torch.Tensor, scales: Sequence[float],
                          flip: bool) -> torch.Tensor:
    """(C + 1, H, W) class probabilities of one normalised (3, H, W) image, averaged over scales and flips."""
    h, w = image.shape[1:]
    total = torch.zeros(())
    views = 0
    for scale in scales:
        size = (max(1, round(h * scale)), max(1, round(w * scale)))
        scaled = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False)
        batch = torch.cat([scaled, scaled.flip(-1)]) if flip else scaled
        logits = _padded_logits(model, batch)
        if flip:
            logits = torch.stack([logits[0], logits[1].flip(-1)])
        logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
        total = total + logits.softmax(dim=1).sum(dim=0)
        views += len(batch)
    return total / views


def refine_prediction(refiner: Refiner, image: np.ndarray, probabilities: torch.Tensor) -> torch.Tensor:
    """(H, W) labels: the argmax of the background probability and the refined maps of the predicted classes."""
    labels = probabilities.argmax(dim=0)
    present = [int(label) for label in labels.unique() if label > 0]
    if not present:
        return labels
    rgb = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).float().div(255.0)[None]
    refined = refiner(rgb, [probabilities[present]], [[label - 1 for label in present]])[0]
    planes = torch.cat([probabilities[:1], refined.to(probabilities.dtype)])
    return torch.tensor([0] + present)[planes.argmax(dim=0)]


def predict_labels(model: Segmenter, image: np.ndarray, cfg: SegmentConfig,
                   refiner: Refiner | None = None) -> np.ndarray:
    """(H, W) uint8 label map (0 background, c + 1 class c) of one uint8 (H, W, 3) image."""
    probabilities = predict_probabilities(model, to_tensor(image, model.mean_std), cfg.scales, cfg.flip)
    labels = probabilities.argmax(dim=0) if refiner is None else refine_prediction(refiner, image, probabilities)
    return labels.numpy().astype(np.uint8)


def predict_split(model: Segmenter, dataset: WeakDataset, cfg: SegmentConfig, out_dir: str | Path | None = None,
                  progress: bool = True) -> Iterator[tuple[Sample, np.ndarray]]:
    """(sample, label map) for every sample; with ``out_dir`` each map is also written as ``<stem>.png``."""
    model.eval()
    refiner = RefinerChain(cfg.refine) if cfg.refine else None
    for sample in tqdm(dataset.samples, desc=f"segment {dataset.split}", disable=not progress, leave=False):
        labels = predict_labels(model, dataset.load_image(sample), cfg, refiner)
        if out_dir is not None:
            save_label_png(Path(out_dir) / f"{sample.stem}.png", labels)
        yield sample, labels


def evaluate_split(model: Segmenter, dataset: WeakDataset, cfg: SegmentConfig, out_dir: str | Path | None = None,
                   progress: bool = True) -> dict[str, object]:
    """Scores of the predictions against the split's ground truth (:class:`SegmentationEvaluator`: ``miou``,
    ``iou``, ``fp``, ``fn``, ...); samples without a ground-truth map are predicted (and written) but not scored."""
    evaluator = SegmentationEvaluator(dataset.num_classes + 1)
    scored = 0
    for sample, labels in predict_split(model, dataset, cfg, out_dir, progress):
        if dataset.has_mask(sample):
            evaluator.update(labels, dataset.load_mask(sample))
            scored += 1
    if not scored:
        raise ScarceError(f"{dataset.root}: split {dataset.split!r} has no ground-truth label maps to score against")
    return evaluator.compute()
