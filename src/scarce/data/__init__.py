"""Datasets for weakly-supervised segmentation: one sample contract, loaders per layout, the scenes generator.

Class indices are ``0..C-1`` (background is not a class); label maps store ``0`` background, ``c + 1`` for
class ``c`` and ``255`` ignore. See ``docs/data.md`` for the layouts.
"""

from scarce.data.base import (
    IGNORE_INDEX,
    Box,
    Sample,
    WeakDataset,
    open_dataset,
    save_label_png,
)
from scarce.data.coco import CocoDataset, decode_rle_counts, export_coco_masks, load_coco
from scarce.data.folder import load_folder
from scarce.data.scenes import TEXTURES, ScenesConfig, generate_scenes
from scarce.data.voc import VOC_CLASSES, load_voc

__all__ = [
    "IGNORE_INDEX",
    "Box",
    "Sample",
    "WeakDataset",
    "open_dataset",
    "save_label_png",
    "CocoDataset",
    "decode_rle_counts",
    "export_coco_masks",
    "load_coco",
    "load_folder",
    "TEXTURES",
    "ScenesConfig",
    "generate_scenes",
    "VOC_CLASSES",
    "load_voc",
]
