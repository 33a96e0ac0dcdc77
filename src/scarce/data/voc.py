"""PASCAL VOC 2012 (plus SBD's ``train_aug``) and anything in its layout, such as the generated scenes.

Image labels come from ``Annotations/<stem>.xml`` (every object counts, ``difficult`` ones included, as in
IRN's ``cls_labels``) or, for an image without XML, from the classes present in its label map.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from scarce.data.base import (
    Box,
    Sample,
    WeakDataset,
    class_indices,
    labels_from_mask,
    read_class_names,
    register_loader,
    require_image,
    require_labels,
)
from scarce.errors import DataError
from scarce.io import read_label_png

VOC_CLASSES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)
CLASS_NAMES_FILE = "class_names.txt"  # what the scenes generator writes
CLASS_NAMES_FILES = (CLASS_NAMES_FILE, "classes.txt")  # also the name the folder loader reads
AUG_SPLIT = "train_aug"
_AUG_LISTS = ("ImageSets/Segmentation/train_aug.txt", "ImageSets/SegmentationAug/train_aug.txt")


def find_voc_root(root: str | Path) -> Path:
    """Accept ``VOCdevkit/VOC2012`` itself, ``VOCdevkit`` or the folder holding ``VOCdevkit``."""
    root = Path(root)
    for candidate in (root, root / "VOC2012", root / "VOCdevkit" / "VOC2012"):
        if (candidate / "JPEGImages").is_dir() and (candidate / "ImageSets").is_dir():
            return candidate
    raise DataError(root, "not a PASCAL VOC folder: no JPEGImages/ and ImageSets/ here, in VOC2012/ or in VOCdevkit/VOC2012/")


def class_names_at(voc_root: Path) -> tuple[str, ...]:
    """The class list at the VOC root (``class_names.txt`` or ``classes.txt``; both only if they agree), else VOC's."""
    lists = {path: read_class_names(path) for path in (voc_root / n for n in CLASS_NAMES_FILES) if path.is_file()}
    if len(set(lists.values())) > 1:
        first, second = lists
        raise DataError(second, f"lists other classes than {first.name}; keep one class list")
    return next(iter(lists.values()), VOC_CLASSES)


def split_list_path(voc_root: Path, split: str) -> Path:
    if split == AUG_SPLIT:
        for relative in _AUG_LISTS:
            if (voc_root / relative).is_file():
                return voc_root / relative
        raise DataError(voc_root / _AUG_LISTS[0], f"SBD split list not found (also looked for {_AUG_LISTS[1]})")
    path = voc_root / "ImageSets" / "Segmentation" / f"{split}.txt"
    if not path.is_file():
        available = sorted(p.stem for p in path.parent.glob("*.txt")) if path.parent.is_dir() else []
        raise DataError(path, f"split list not found; available splits: {', '.join(available) or 'none'}")
    return path


def read_split_list(path: Path) -> list[str]:
    """Stems, one per line; DeepLab-style lines (``/JPEGImages/x.jpg /SegmentationClassAug/x.png``) also work."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(path, f"split list is not UTF-8 text ({exc})") from None
    stems = []
    for line in text.splitlines():
        tokens = line.split()
        if tokens:
            stems.append(Path(tokens[0]).stem)
    return stems


def parse_voc_xml(path: Path, class_names: tuple[str, ...]) -> tuple[tuple[int, ...], tuple[Box, ...]]:
    """Labels and boxes of one annotation file; VOC's 1-based inclusive corners become 0-based, x1/y1 exclusive."""
    try:
        tree = ET.parse(path)
    except ET.ParseError as exc:
        raise DataError(path, f"not valid XML ({exc})") from None
    names: list[str] = []
    boxes: list[Box] = []
    for obj in tree.getroot().iter("object"):
        name = (obj.findtext("name") or "").strip()
        if not name:
            raise DataError(path, "an <object> has no <name>")
        (label,) = class_indices([name], class_names, path)
        names.append(name)
        bndbox = obj.find("bndbox")
        if bndbox is None:
            continue
        try:
            xmin, ymin, xmax, ymax = (float(bndbox.findtext(tag) or "") for tag in ("xmin", "ymin", "xmax", "ymax"))
        except ValueError:
            raise DataError(path, f"<bndbox> of object {name!r} lacks numeric xmin/ymin/xmax/ymax") from None
        boxes.append(Box(label, xmin - 1.0, ymin - 1.0, xmax, ymax))
    return class_indices(names, class_names, path), tuple(boxes)


@register_loader("voc", "scenes")
def load_voc(
    root: str | Path,
    split: str,
    class_names: tuple[str, ...] | list[str] | None = None,
    allow_empty: bool = False,
) -> WeakDataset:
    """Load split ``split`` ("train", "val", "trainval", "test", "train_aug", ...) of a VOC-layout folder.

    Class names: ``class_names`` if given, else ``class_names.txt`` or ``classes.txt`` at the VOC root, else
    the 20 VOC classes.
    ``train_aug`` takes its masks from ``SegmentationClassAug/`` (falling back to ``SegmentationClass/`` per
    image); other splits use ``SegmentationClass/`` only, the official ground truth.
    """
    voc_root = find_voc_root(root)
    if class_names is not None:
        names = tuple(class_names)
    else:
        names = class_names_at(voc_root)
    list_path = split_list_path(voc_root, split)
    mask_dirs = [voc_root / "SegmentationClass"]
    if split == AUG_SPLIT:
        mask_dirs.insert(0, voc_root / "SegmentationClassAug")

    samples = []
    for stem in read_split_list(list_path):
        image_path = require_image(voc_root / "JPEGImages" / f"{stem}.jpg", list_path)
        mask_path = next((d / f"{stem}.png" for d in mask_dirs if (d / f"{stem}.png").is_file()), None)
        xml_path = voc_root / "Annotations" / f"{stem}.xml"
        if xml_path.is_file():
            labels, boxes = parse_voc_xml(xml_path, names)
            where = xml_path
        elif mask_path is not None:
            labels, boxes = labels_from_mask(read_label_png(mask_path), len(names), mask_path), ()
            where = mask_path
        else:
            labels, boxes, where = (), (), image_path
        require_labels(labels, where, allow_empty)
        samples.append(Sample(stem, image_path, labels, mask_path, boxes))
    return WeakDataset(names, samples, voc_root, split)
