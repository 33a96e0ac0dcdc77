"""Models: timm backbones with heads whose class activation maps are exact."""

from scarce.models.classifier import (
    CamClassifier,
    CamModel,
    ModelConfig,
    TimmHeadClassifier,
    build_classifier,
    build_imagenet_classifier,
)
from scarce.models.pooling import GlobalAvgPool, ThresholdedAvgPool, build_pooling
from scarce.models.weights import create_timm

__all__ = [
    "CamClassifier", "CamModel", "ModelConfig", "TimmHeadClassifier", "build_classifier",
    "build_imagenet_classifier", "GlobalAvgPool", "ThresholdedAvgPool", "build_pooling", "create_timm",
]
