"""Scores: segmentation confusion-matrix metrics, background-threshold sweeps and folder evaluation."""

from scarce.metrics.folders import evaluate_folders
from scarce.metrics.segmentation import SegmentationEvaluator, ThresholdSweep, scores_from_confusion

__all__ = ["SegmentationEvaluator", "ThresholdSweep", "scores_from_confusion", "evaluate_folders"]
