"""Fixtures of the CAM-method tests: a tiny randomly initialised classifier (no download, no pretrained weights)."""

from __future__ import annotations

import pytest
import torch

import scarce.methods  # noqa: F401  (registers the objectives and CAM methods)
from scarce.models import ModelConfig, build_classifier


@pytest.fixture
def tiny_model():
    return _random_head(4)


@pytest.fixture
def scenes_model():
    """The tiny classifier with the scenes benchmark's 10 classes."""
    return _random_head(10)


def _random_head(num_classes: int):
    torch.manual_seed(0)
    model = build_classifier(ModelConfig(backbone="test_efficientnet", pretrained=None), num_classes)
    torch.nn.init.normal_(model.classifier.weight, std=0.1)  # the spine starts heads at zero; maps need weights
    return model.eval()
