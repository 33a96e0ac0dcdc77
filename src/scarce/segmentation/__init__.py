"""The segmentation stage: DeepLabV3+ (segmentation-models-pytorch, timm encoder) trained on label maps.

Public API (all in this package)::

    cfg = SegmentConfig()                                   # or scarce.config.from_dict(SegmentConfig, yaml["segment"])
    trained = train_segmenter(cfg, train_set, masks, out_dir)  # masks: a folder of <stem>.png, or GROUND_TRUTH
    model = load_segmenter(cfg, train_set.num_classes, trained.model_path)
    scores = evaluate_split(model, test_set, cfg, out_dir=None)  # SegmentationEvaluator scores: miou, iou, fp, fn, ...
    for sample, labels in predict_split(model, test_set, cfg, out_dir): ...  # label maps, written as <stem>.png

- ``masks`` is a folder of pseudo masks (``scarce.pseudo.masks.save_label_png``: 0 background, c + 1 class c,
  255 ignored by the loss) or :data:`GROUND_TRUTH`; the fully supervised ceiling is
  ``train_segmenter(cfg, train_set, GROUND_TRUTH, ceiling_dir)``, the same code on other masks.
- Every mask is checked before training (missing, unreadable, wrong size, values above C other than 255:
  :class:`~scarce.errors.DataError` naming the file).
- ``train_segmenter`` resumes from ``out_dir/checkpoint.pt`` (identical weights to an uninterrupted run),
  writes ``out_dir/train_log.csv`` (loss per epoch) and refuses a checkpoint made with another config or
  other masks; it returns a :class:`~scarce.training.TrainResult` (``out_dir/model.pt``, the log and the
  training seconds, added up over resumed invocations).
- Inference averages the softmax over ``cfg.scales`` and their flips; ``cfg.refine`` (e.g. ``("crf",)``)
  post-processes with refiners from :mod:`scarce.refinement`.

Modules: :mod:`.model` (the network and why smp), :mod:`.data` (mask sources, pairs), :mod:`.train` (config,
loss, recipe), :mod:`.predict` (inference and scores). See docs/segmentation.md.
"""

from scarce.segmentation.data import GROUND_TRUTH, MaskSource
from scarce.segmentation.model import Segmenter, SegmenterConfig, build_segmenter
from scarce.segmentation.predict import evaluate_split, predict_labels, predict_probabilities, predict_split
from scarce.segmentation.train import (PixelCrossEntropy, SegmentAugmentConfig, SegmentConfig, SegmentTrainConfig,
                                       load_segmenter, train_segmenter)

__all__ = [
    "GROUND_TRUTH", "MaskSource", "Segmenter", "SegmenterConfig", "build_segmenter", "evaluate_split",
    "predict_labels", "predict_probabilities", "predict_split", "PixelCrossEntropy", "SegmentAugmentConfig",
    "SegmentConfig", "SegmentTrainConfig", "load_segmenter", "train_segmenter",
]
