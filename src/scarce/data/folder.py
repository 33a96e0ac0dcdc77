"""Generic multi-label folder: images plus a label file, for data that follows no benchmark layout.

Layout under ``root``::

    images/                 the images (or directly in root when there is no images/ folder)
    labels.csv              "image,labels" header; labels separated by ';' or spaces   (or:)
    labels.json             {"a.jpg": ["cat", "dog"], ...}
    classes.txt             optional: one class per line, defines the indices; else sorted names seen
    masks/<stem>.png        optional label maps (0 background, class index + 1, 255 ignore)

``labels_<split>.csv`` / ``labels_<split>.json`` take precedence over ``labels.*`` so one folder can hold
several splits. Image names in the label file are relative to the images folder.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

from scarce.data.base import (
    Sample, WeakDataset, class_indices, read_class_names, register_loader, require_image, require_labels,
)
from scarce.errors import DataError
from scarce.io import read_json

_SEPARATORS = re.compile(r"[;\s]+")


def find_label_file(root: Path, split: str) -> Path:
    """The split's own label file if present, else the shared one; two candidates of one kind is an error."""
    for names in ((f"labels_{split}.csv", f"labels_{split}.json"), ("labels.csv", "labels.json")):
        found = [root / name for name in names if (root / name).is_file()]
        if len(found) == 2:
            raise DataError(found[1], f"both {found[0].name} and {found[1].name} exist; keep one")
        if found:
            return found[0]
    raise DataError(root, f"no labels_{split}.csv/json or labels.csv/json in this folder")


def read_label_csv(path: Path) -> dict[str, list[str]]:
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle))
    except UnicodeDecodeError as exc:
        raise DataError(path, f"not UTF-8 text ({exc})") from None
    if not rows or [cell.strip().lower() for cell in rows[0]] != ["image", "labels"]:
        raise DataError(path, "first row must be the header 'image,labels'")
    entries: dict[str, list[str]] = {}
    for line_number, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) > 2:
            raise DataError(path, f"line {line_number}: expected 2 columns, got {len(row)} (separate labels with ';')")
        image, labels = row[0].strip(), row[1] if len(row) == 2 else ""
        if image in entries:
            raise DataError(path, f"line {line_number}: image {image!r} is listed twice")
        entries[image] = [name for name in _SEPARATORS.split(labels.strip()) if name]
    return entries


def read_label_json(path: Path) -> dict[str, list[str]]:
    data = read_json(path)
    if not isinstance(data, dict) or not all(
        isinstance(names, list) and all(isinstance(name, str) for name in names) for names in data.values()
    ):
        raise DataError(path, 'expected an object mapping image names to lists of class names, e.g. {"a.jpg": ["cat"]}')
    return {image: list(names) for image, names in data.items()}


@register_loader("folder")
def load_folder(root: str | Path, split: str = "all", allow_empty: bool = False) -> WeakDataset:
    """Load a labelled image folder (see the module docstring for the layout)."""
    root = Path(root)
    label_file = find_label_file(root, split)
    entries = read_label_csv(label_file) if label_file.suffix == ".csv" else read_label_json(label_file)
    if (root / "classes.txt").is_file():
        class_names = read_class_names(root / "classes.txt")
    else:
        class_names = tuple(sorted({name for names in entries.values() for name in names}))
        if not class_names:
            raise DataError(label_file, "no class names anywhere and no classes.txt to define them")
    image_dir = root / "images" if (root / "images").is_dir() else root

    samples = []
    for image_name, names in entries.items():
        image_path = require_image(image_dir / image_name, label_file)
        labels = class_indices(names, class_names, label_file, context=f"image {image_name!r}: ")
        require_labels(labels, image_path, allow_empty)
        mask_path = root / "masks" / f"{image_path.stem}.png"
        samples.append(Sample(image_path.stem, image_path, labels, mask_path if mask_path.is_file() else None))
    return WeakDataset(class_names, samples, root, split)
