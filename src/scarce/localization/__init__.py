"""Weakly-supervised object localization: boxes from CAMs, TAP/NWC/PaS, the WSOL metrics and datasets.

- :mod:`~scarce.localization.boxes`: CAM → boxes (CAM paper's largest component, all components), at one
  threshold or a whole grid, with the max (MaS) or a percentile (PaS) as the standard, in an exact or the
  wsolevaluation (OpenCV-compatible) convention;
- :mod:`~scarce.localization.metrics`: streaming MaxBoxAccV1/V2, top-1 loc, PxAP and Peak IoU, and the
  held-out-threshold protocol;
- :mod:`~scarce.models.nwc`: negative weight clamping for every CAM method (TAP is
  ``ModelConfig(pooling="tap")``, PaS is ``CamConfig(normalize="percentile")``);
- :mod:`~scarce.localization.datasets`: CUB-200-2011, ImageNet validation boxes, wsolevaluation metadata
  (OpenImages30k masks);
- :mod:`~scarce.localization.localize`: ``scarce localize`` for anyone's photos;
- :mod:`~scarce.localization.ablation`: CAM → +PaS → +NWC → +TAP on the scenes benchmark.
"""

from scarce.localization.boxes import CamBox, ThresholdBoxes, box_iou, boxes_from_cam, gt_boxes_for, threshold_boxes
from scarce.localization.datasets import load_cub, load_imagenet_val, load_wsol_metadata, open_wsol_dataset
from scarce.localization.evaluate import WsolMetricsConfig, evaluate_cam_folder, predicted_scores
from scarce.localization.metrics import (
    BoxAccuracy,
    PixelPrecisionRecall,
    WsolEvaluator,
    cam_threshold_grid,
    protocol_scores,
)
from scarce.models.nwc import NegativeWeightClamped, with_nwc
from scarce.localization.rle import rle_decode, rle_encode

__all__ = [
    "CamBox", "ThresholdBoxes", "box_iou", "boxes_from_cam", "gt_boxes_for", "threshold_boxes",
    "load_cub", "load_imagenet_val", "load_wsol_metadata", "open_wsol_dataset",
    "WsolMetricsConfig", "evaluate_cam_folder", "predicted_scores",
    "BoxAccuracy", "PixelPrecisionRecall", "WsolEvaluator", "cam_threshold_grid", "protocol_scores",
    "NegativeWeightClamped", "with_nwc", "rle_decode", "rle_encode",
]
