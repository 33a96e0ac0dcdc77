"""WSOL datasets in their standard layouts, as :class:`~scarce.data.base.WeakDataset`\\ s with boxes or masks.

- **CUB-200-2011** (``CUB_200_2011/``): ``images.txt`` (id, path under ``images/``), ``classes.txt``,
  ``image_class_labels.txt``, ``bounding_boxes.txt`` (id, x, y, width, height; floats) and
  ``train_test_split.txt`` (1 = train). A box becomes ``(x, y, x + width, y + height)``; class names lose
  their ``001.`` prefix; splits are ``train`` and ``test``.
- **ImageNet validation boxes**: a folder of per-image XML files (``ILSVRC2012_val_00000001.xml``, VOC-like,
  objects named by WordNet id) and the images (flat, or in class sub-folders). Classes are the 1000 of
  ImageNet-1k in the standard index order. XML corners are used as written, ``(xmin, ymin, xmax, ymax)``,
  which is what wsolevaluation's metadata holds for ImageNet.
- **wsolevaluation metadata** (``metadata/<dataset>/<split>/``): ``image_ids.txt``, ``class_labels.txt``
  (``id,label``) and ``localization.txt``: ``id,x0,y0,x1,y1`` rows (boxes; CUB/ILSVRC) or
  ``id,mask,ignore`` rows (masks; OpenImages30k, several instance masks per image, one ignore mask).
  A pixel is foreground when any instance mask is non-zero; the ignore mask minus the foreground becomes
  label 255. Masks are resized (nearest) to the image when their sizes differ (wsolevaluation resizes
  both to 224). Class names: the images' parent folder names when each label has one (OpenImages'
  ``0bt_c3``), else ``class_<k>``.

Sample stems are the image ids with ``/`` replaced by ``__`` (ids repeat file names across folders).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from scarce.data.base import (
    IGNORE_INDEX, Box, Sample, WeakDataset, image_size, open_dataset, read_class_names, require_image,
)
from scarce.errors import ConfigError, DataError
from scarce.io import read_label_png


def _read_table(path: Path, columns: int, separator: str | None = None) -> list[list[str]]:
    """Rows of a whitespace- (or ``separator``-) separated text file; a short row is an error naming the line."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DataError(path, "file not found") from None
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        parts = line.strip().split(separator, columns - 1) if separator is None else line.rstrip("\n").split(separator)
        if len(parts) < columns:
            raise DataError(path, f"line {number} has {len(parts)} fields, expected {columns}: {line!r}")
        rows.append(parts)
    return rows


def _stem(image_id: str) -> str:
    return image_id.replace("\\", "/").replace("/", "__").rsplit(".", 1)[0]


def find_cub_root(root: str | Path) -> Path:
    root = Path(root)
    for candidate in (root, root / "CUB_200_2011"):
        if (candidate / "images.txt").is_file():
            return candidate
    raise DataError(root, "not a CUB-200-2011 folder: no images.txt here or in CUB_200_2011/")


def load_cub(root: str | Path, split: str) -> WeakDataset:
    """Split ``train`` or ``test`` of CUB-200-2011 with its one box per image."""
    if split not in ("train", "test"):
        raise ConfigError(f"CUB-200-2011 has splits 'train' and 'test', not {split!r}")
    root = find_cub_root(root)
    classes = [line.split(None, 1) for line in read_class_names(root / "classes.txt")]
    if any(len(row) < 2 for row in classes):
        raise DataError(root / "classes.txt", "each line must be a class number and a name (`1 001.Black_footed_Albatross`)")
    number_to_index = {number: i for i, (number, _) in enumerate(classes)}
    names = tuple(name.split(".", 1)[1] if "." in name else name for _, name in classes)
    paths = dict(_read_table(root / "images.txt", 2))
    labels = dict(_read_table(root / "image_class_labels.txt", 2))
    is_train = dict(_read_table(root / "train_test_split.txt", 2))
    boxes = {row[0]: row[1].split() for row in _read_table(root / "bounding_boxes.txt", 2)}
    samples = []
    for image_id, relative in paths.items():
        for table, source in ((labels, "image_class_labels.txt"), (is_train, "train_test_split.txt")):
            if image_id not in table:
                raise DataError(root / source, f"image id {image_id} of images.txt is missing")
        if (is_train[image_id].strip() == "1") != (split == "train"):
            continue
        if labels[image_id].strip() not in number_to_index:
            raise DataError(root / "image_class_labels.txt", f"image {image_id} has unknown class {labels[image_id]!r}")
        label = number_to_index[labels[image_id].strip()]
        sample_boxes: tuple[Box, ...] = ()
        if image_id in boxes:
            try:
                x, y, width, height = (float(v) for v in boxes[image_id])
            except ValueError:
                raise DataError(root / "bounding_boxes.txt", f"image {image_id}: box must be 4 numbers") from None
            sample_boxes = (Box(label, x, y, x + width, y + height),)
        image_path = require_image(root / "images" / relative.strip(), root / "images.txt")
        samples.append(Sample(Path(relative.strip()).stem, image_path, (label,), None, sample_boxes))
    return WeakDataset(names, samples, root, split)


def load_imagenet_val(images: str | Path, annotations: str | Path, split: str = "val") -> WeakDataset:
    """ImageNet validation images with their XML boxes (one XML per image; images without XML are left out)."""
    from scarce.localization.classes import imagenet_classes

    images, annotations = Path(images), Path(annotations)
    if not annotations.is_dir():
        raise DataError(annotations, "ImageNet box annotation folder not found")
    names, wnids = imagenet_classes()
    index_of = {w: i for i, w in enumerate(wnids)}
    files = {p.stem: p for p in images.rglob("*") if p.suffix.lower() in (".jpeg", ".jpg", ".png")}
    samples = []
    for xml_path in sorted(annotations.rglob("*.xml")):
        try:
            tree = ET.parse(xml_path)
        except ET.ParseError as exc:
            raise DataError(xml_path, f"not valid XML ({exc})") from None
        found = []
        for obj in tree.getroot().iter("object"):
            wnid = (obj.findtext("name") or "").strip()
            if wnid not in index_of:
                raise DataError(xml_path, f"object name {wnid!r} is not an ImageNet-1k WordNet id")
            bndbox = obj.find("bndbox")
            if bndbox is None:
                continue
            try:
                corners = [float(bndbox.findtext(tag) or "") for tag in ("xmin", "ymin", "xmax", "ymax")]
            except ValueError:
                raise DataError(xml_path, f"<bndbox> of {wnid} lacks numeric xmin/ymin/xmax/ymax") from None
            found.append(Box(index_of[wnid], *corners))
        if xml_path.stem not in files:
            raise DataError(xml_path, f"no image named {xml_path.stem}.* under {images}")
        labels = tuple(sorted({b.label for b in found}))
        samples.append(Sample(xml_path.stem, files[xml_path.stem], labels, None, tuple(found)))
    if not samples:
        raise DataError(annotations, "no XML annotations found")
    return WeakDataset(names, samples, images, split)


@dataclass
class MaskListDataset(WeakDataset):
    """A dataset whose label map is composed from instance masks and an ignore mask (OpenImages30k)."""

    mask_files: dict[str, tuple[tuple[Path, ...], Path | None]] = field(default_factory=dict)

    def has_mask(self, sample: Sample) -> bool:
        return sample.stem in self.mask_files

    def _read_mask(self, sample: Sample) -> tuple[np.ndarray, Path]:
        if sample.stem not in self.mask_files:
            raise DataError(sample.image_path, "this sample has no masks")
        instances, ignore = self.mask_files[sample.stem]
        size = image_size(sample.image_path)
        foreground = np.zeros(size, dtype=bool)
        for path in instances:
            foreground |= _mask_at(path, size) > 0
        label_map = np.where(foreground, sample.labels[0] + 1, 0).astype(np.uint8)
        if ignore is not None:
            label_map[(_mask_at(ignore, size) > 0) & ~foreground] = IGNORE_INDEX
        return label_map, instances[0]


def _mask_at(path: Path, size: tuple[int, int]) -> np.ndarray:
    """A grayscale mask (H, W) at ``size`` (nearest-neighbour resize when it differs)."""
    try:
        mask = read_label_png(path)
    except DataError:
        try:
            with Image.open(path) as img:
                mask = np.asarray(img.convert("L"))
        except FileNotFoundError:
            raise DataError(path, "mask file not found") from None
        except OSError as exc:
            raise DataError(path, f"cannot read mask ({exc})") from None
    if mask.shape != size:
        mask = np.asarray(Image.fromarray(mask).resize((size[1], size[0]), Image.NEAREST))
    return mask


def load_wsol_metadata(metadata: str | Path, data_root: str | Path, split: str, mask_root: str | Path | None = None,
                       class_names: tuple[str, ...] | None = None) -> WeakDataset:
    """A split in wsolevaluation's metadata format; images (and masks) are found under ``data_root``."""
    folder = Path(metadata) / split
    data_root = Path(data_root)
    mask_root = Path(mask_root) if mask_root is not None else data_root
    ids = [line.strip() for line in _read_lines(folder / "image_ids.txt") if line.strip()]
    labels = {image_id: int(label) for image_id, label in _read_table(folder / "class_labels.txt", 2, ",")}
    rows = _read_table(folder / "localization.txt", 3, ",")
    with_masks = all(len(row) == 3 for row in rows)
    boxes: dict[str, list[Box]] = {}
    masks: dict[str, tuple[list[Path], Path | None]] = {}
    for row in rows:
        image_id = row[0]
        if image_id not in labels:
            raise DataError(folder / "class_labels.txt", f"image {image_id} of localization.txt has no class label")
        if with_masks:
            instances, ignore = masks.setdefault(image_id, ([], None))
            instances.append(mask_root / row[1])
            if row[2]:
                masks[image_id] = (instances, mask_root / row[2])
        else:
            if len(row) != 5:
                raise DataError(folder / "localization.txt", f"expected id,x0,y0,x1,y1 or id,mask,ignore: {','.join(row)}")
            try:
                corners = [float(v) for v in row[1:]]
            except ValueError:
                raise DataError(folder / "localization.txt", f"box of {image_id} is not numeric: {','.join(row[1:])}") from None
            boxes.setdefault(image_id, []).append(Box(labels[image_id], *corners))
    missing = [i for i in ids if i not in labels]
    if missing:
        raise DataError(folder / "class_labels.txt", f"{len(missing)} image ids have no label, e.g. {missing[0]}")
    names = class_names or _folder_class_names(ids, labels)
    samples = []
    for image_id in ids:
        image_path = require_image(data_root / image_id, folder / "image_ids.txt")
        mask_path = masks[image_id][0][0] if image_id in masks else None
        samples.append(Sample(_stem(image_id), image_path, (labels[image_id],), mask_path, tuple(boxes.get(image_id, ()))))
    if with_masks:
        files = {_stem(i): (tuple(m), ignore) for i, (m, ignore) in masks.items()}
        return MaskListDataset(names, samples, data_root, split, mask_files=files)
    return WeakDataset(names, samples, data_root, split)


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DataError(path, "file not found") from None


def _folder_class_names(ids: list[str], labels: dict[str, int]) -> tuple[str, ...]:
    count = max(labels[i] for i in ids) + 1 if ids else 0
    folders: dict[int, set[str]] = {}
    for image_id in ids:
        parent = Path(image_id).parent.name
        folders.setdefault(labels[image_id], set()).add(parent)
    named = all(len(folders.get(k, ())) == 1 and next(iter(folders[k])) for k in range(count))
    names = [next(iter(folders[k])) if named else f"class_{k}" for k in range(count)]
    return tuple(names) if len(set(names)) == len(names) else tuple(f"class_{k}" for k in range(count))


def open_wsol_dataset(kind: str, root: str | Path, split: str, annotations: str | Path | None = None) -> WeakDataset:
    """A dataset by layout name: scenes/voc, cub, imagenet (``annotations`` = XML folder), openimages/wsol
    (``annotations`` = the metadata folder holding one folder per split)."""
    if kind in ("scenes", "voc"):
        return open_dataset(kind, root, split, allow_empty=True)
    if kind == "cub":
        return load_cub(root, split)
    if kind == "imagenet":
        if annotations is None:
            raise ConfigError("imagenet needs the folder of XML box annotations (--annotations)")
        return load_imagenet_val(root, annotations, split)
    if kind in ("openimages", "wsol"):
        if annotations is None:
            raise ConfigError(f"{kind} needs wsolevaluation's metadata folder (--annotations)")
        return load_wsol_metadata(annotations, root, split)
    raise ConfigError(f"unknown WSOL dataset layout {kind!r}; known: scenes, voc, cub, imagenet, openimages, wsol")
