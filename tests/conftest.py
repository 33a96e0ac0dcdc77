"""Shared fixtures. Nothing in the tests may wait on the network."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def tiny_scenes(tmp_path_factory):
    """A 24-image scenes benchmark (VOC layout) from the shipped Fashion-MNIST subset."""
    from scarce.data.scenes import ScenesConfig, generate_scenes

    root = tmp_path_factory.mktemp("scenes")
    generate_scenes(ScenesConfig(n=24, seed=3, image_size=64, scale_range=(0.3, 0.6), subset=True), root, progress=False)
    return root
