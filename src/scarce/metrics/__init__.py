"""Scores: segmentation confusion-matrix metrics, background-threshold sweeps, error profiles, folder evaluation."""

from scarce.metrics.extent import ErrorDistanceProfile
from scarce.metrics.folders import evaluate_folders
from scarce.metrics.segmentation import SegmentationEvaluator, ThresholdSweep, scores_from_confusion

__all__ = ["SegmentationEvaluator", "ThresholdSweep", "ErrorDistanceProfile", "scores_from_confusion", "evaluate_folders"]
