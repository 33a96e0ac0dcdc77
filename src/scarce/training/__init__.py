"""Classifier training on image-level labels: objectives (losses) and a resumable trainer."""

from scarce.training.losses import OBJECTIVES, MultiLabelObjective, Objective, build_objective, register_objective
from scarce.training.trainer import TrainConfig, TrainResult, load_trained, train_classifier
from scarce.training.transforms import AugmentConfig, to_tensor

__all__ = [
    "OBJECTIVES", "MultiLabelObjective", "Objective", "build_objective", "register_objective", "TrainConfig",
    "TrainResult", "load_trained", "train_classifier", "AugmentConfig", "to_tensor",
]
