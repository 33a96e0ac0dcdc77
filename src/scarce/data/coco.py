"""MS-COCO 2014/2017 from ``annotations/instances_<split>.json`` and ``<split>/`` images, without pycocotools.

Choices (IRN/ReCAM-style COCO WSSS):

* class indices follow category ids in increasing order (80 contiguous indices for COCO), names from the JSON;
* image labels are all categories with at least one annotation, crowd annotations included (the objects
  are there; only their extent is vague);
* label maps are rasterised on demand: annotations are painted in file order, so where instances overlap
  the **later annotation wins**; crowd regions are painted last, as 255 (ignore);
* boxes come from non-crowd annotations only (COCO's own evaluation ignores crowd boxes).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from scarce.data.base import (
    IGNORE_INDEX, Box, Sample, WeakDataset, register_loader, require_image, require_labels, save_label_png,
)
from scarce.errors import DataError
from scarce.io import read_json


def decode_rle_counts(counts: str) -> list[int]:
    """Decode COCO's compressed RLE string into run lengths.

    Each run is a little-endian sequence of 5-bit groups stored as ``chr(48 + group)``; bit 0x20 means "more
    groups follow" and bit 0x10 of the last group is the sign. From the third run on, the stored value is the
    difference to the run two places earlier.
    """
    runs: list[int] = []
    position = 0
    while position < len(counts):
        value, shift, more = 0, 0, True
        while more:
            if position >= len(counts):
                raise ValueError("compressed RLE string ends inside a run")
            group = ord(counts[position]) - 48
            if not 0 <= group < 64:
                raise ValueError(f"character {counts[position]!r} is not valid in a compressed RLE string")
            value |= (group & 0x1F) << shift
            more = bool(group & 0x20)
            position += 1
            shift += 5
            if not more and group & 0x10:
                value |= -1 << shift
        if len(runs) > 2:
            value += runs[-2]
        runs.append(value)
    return runs


def rle_to_mask(runs: list[int], height: int, width: int) -> np.ndarray:
    """Boolean (H, W) mask from run lengths that alternate background/foreground in column-major order."""
    if any(run < 0 for run in runs):
        raise ValueError("RLE has a negative run length")
    if sum(runs) != height * width:
        raise ValueError(f"RLE runs cover {sum(runs)} pixels, the image has {height * width}")
    values = np.zeros(len(runs), dtype=bool)
    values[1::2] = True
    return np.repeat(values, runs).reshape((width, height)).T


def polygons_to_mask(polygons: list[list[float]], height: int, width: int) -> np.ndarray:
    """Union of polygons given as flat ``[x1, y1, x2, y2, ...]`` lists, filled with their outline."""
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    for polygon in polygons:
        if len(polygon) < 6 or len(polygon) % 2:
            raise ValueError(f"a polygon needs an even number (>= 6) of coordinates, got {len(polygon)}")
        draw.polygon([(float(polygon[i]), float(polygon[i + 1])) for i in range(0, len(polygon), 2)], fill=1, outline=1)
    return np.asarray(canvas, dtype=bool)


def segmentation_to_mask(segmentation: Any, height: int, width: int) -> np.ndarray:
    """Rasterise any COCO segmentation (polygon list, uncompressed or compressed RLE) to a boolean mask."""
    if isinstance(segmentation, list):
        return polygons_to_mask(segmentation, height, width)
    if isinstance(segmentation, dict) and "counts" in segmentation and "size" in segmentation:
        rle_height, rle_width = segmentation["size"]
        if (rle_height, rle_width) != (height, width):
            raise ValueError(f"RLE size {rle_height}x{rle_width} differs from the image's {height}x{width}")
        counts = segmentation["counts"]
        runs = decode_rle_counts(counts) if isinstance(counts, str) else [int(c) for c in counts]
        return rle_to_mask(runs, height, width)
    raise ValueError(f"unrecognised segmentation of type {type(segmentation).__name__}")


class CocoDataset(WeakDataset):
    """A :class:`WeakDataset` whose label maps are rasterised from the annotation JSON when asked for."""

    def __init__(
        self,
        class_names: tuple[str, ...],
        samples: list[Sample],
        root: Path,
        split: str,
        annotation_file: Path,
        annotations: dict[str, list[dict[str, Any]]],
        category_index: dict[int, int],
        sizes: dict[str, tuple[int, int]],
    ) -> None:
        super().__init__(class_names, samples, root, split)
        self.annotation_file = annotation_file
        self._annotations = annotations
        self._category_index = category_index
        self._sizes = sizes

    def has_mask(self, sample: Sample) -> bool:
        return True

    def _read_mask(self, sample: Sample) -> tuple[np.ndarray, Path]:
        height, width = self._sizes[sample.stem]
        label_map = np.zeros((height, width), dtype=np.uint8)
        crowd = np.zeros((height, width), dtype=bool)
        for annotation in self._annotations[sample.stem]:
            try:
                region = segmentation_to_mask(annotation["segmentation"], height, width)
            except (KeyError, ValueError, TypeError) as exc:
                raise DataError(
                    self.annotation_file, f"annotation id {annotation.get('id')} of {sample.image_path.name}: {exc}"
                ) from None
            if annotation.get("iscrowd"):
                crowd |= region
            else:
                label_map[region] = self._category_index[annotation["category_id"]] + 1
        label_map[crowd] = IGNORE_INDEX
        return label_map, self.annotation_file


@register_loader("coco")
def load_coco(root: str | Path, split: str, allow_empty: bool = False) -> CocoDataset:
    """Load ``split`` (e.g. "train2014", "val2017") from ``root/annotations/instances_<split>.json``.

    Images are looked up in ``root/<split>/``.
    """
    root = Path(root)
    annotation_file = root / "annotations" / f"instances_{split}.json"
    data = read_json(annotation_file)
    if not isinstance(data, dict) or not all(isinstance(data.get(key), list) for key in ("images", "annotations", "categories")):
        raise DataError(annotation_file, "expected a COCO instances file with 'images', 'annotations' and 'categories' lists")
    try:
        categories = sorted(data["categories"], key=lambda category: int(category["id"]))
        category_index = {int(category["id"]): index for index, category in enumerate(categories)}
        class_names = tuple(str(category["name"]) for category in categories)
        images = {int(image["id"]): image for image in data["images"]}
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(annotation_file, f"malformed category or image entry ({exc!r})") from None

    per_image: dict[int, list[dict[str, Any]]] = {image_id: [] for image_id in images}
    for annotation in data["annotations"]:
        image_id, category_id = annotation.get("image_id"), annotation.get("category_id")
        if image_id not in per_image:
            raise DataError(annotation_file, f"annotation id {annotation.get('id')} refers to unknown image id {image_id}")
        if category_id not in category_index:
            raise DataError(annotation_file, f"annotation id {annotation.get('id')} has unknown category id {category_id}")
        per_image[image_id].append(annotation)

    samples: list[Sample] = []
    annotations: dict[str, list[dict[str, Any]]] = {}
    sizes: dict[str, tuple[int, int]] = {}
    for image_id in sorted(images):
        image = images[image_id]
        try:
            image_path = require_image(root / split / image["file_name"], annotation_file)
            size = (int(image["height"]), int(image["width"]))
            boxes = tuple(_box(a, category_index) for a in per_image[image_id] if not a.get("iscrowd") and "bbox" in a)
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(annotation_file, f"malformed entry for image id {image_id} ({exc!r})") from None
        labels = tuple(sorted({category_index[a["category_id"]] for a in per_image[image_id]}))
        require_labels(labels, image_path, allow_empty)
        samples.append(Sample(image_path.stem, image_path, labels, None, boxes))
        annotations[image_path.stem] = per_image[image_id]
        sizes[image_path.stem] = size
    return CocoDataset(class_names, samples, root, split, annotation_file, annotations, category_index, sizes)


def _box(annotation: dict[str, Any], category_index: dict[int, int]) -> Box:
    """COCO's ``[x, y, width, height]`` as corners (x1/y1 exclusive)."""
    x, y, w, h = (float(v) for v in annotation["bbox"])
    return Box(category_index[annotation["category_id"]], x, y, x + w, y + h)


def export_coco_masks(dataset: CocoDataset, out_dir: str | Path, progress: bool = True) -> WeakDataset:
    """Write every label map as ``<out_dir>/<stem>.png`` (VOC palette) and return the dataset pointing at them."""
    out_dir = Path(out_dir)
    samples = []
    for sample in tqdm(dataset.samples, desc="coco masks", disable=not progress):
        mask_path = out_dir / f"{sample.stem}.png"
        save_label_png(mask_path, dataset.load_mask(sample))
        samples.append(Sample(sample.stem, sample.image_path, sample.labels, mask_path, sample.boxes))
    return WeakDataset(dataset.class_names, samples, dataset.root, dataset.split)
