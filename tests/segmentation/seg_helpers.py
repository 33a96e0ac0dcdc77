"""Small segmenters for fast tests: timm's ``test_efficientnet`` encoder, a narrow decoder, 64-px crops."""

from __future__ import annotations

from scarce.segmentation import SegmentAugmentConfig, SegmentConfig, SegmenterConfig, SegmentTrainConfig


def tiny_config(epochs: int = 2, batch_size: int = 4, **train: object) -> SegmentConfig:
    return SegmentConfig(
        model=SegmenterConfig(encoder="test_efficientnet", pretrained=None, decoder_channels=32),
        train=SegmentTrainConfig(epochs=epochs, batch_size=batch_size, augment=SegmentAugmentConfig(crop_size=64),
                                 seed=5, **train),
    )

