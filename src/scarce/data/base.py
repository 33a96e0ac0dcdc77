"""The sample/dataset contract shared by every loader and by training, CAM and evaluation code.

Conventions (the same everywhere in scarce):

* a *class index* is ``0..C-1`` and refers to ``WeakDataset.class_names``; background is not a class;
* a *label map* (mask) stores ``0`` for background, ``c + 1`` for class ``c`` and ``255`` for "ignore";
* a :class:`Box` is in pixel coordinates with ``x1``/``y1`` exclusive (VOC's 1-based inclusive boxes are
  converted on load).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
from PIL import Image

from scarce.errors import ConfigError, DataError
from scarce.io import IGNORE_INDEX, read_image, read_label_png, save_label_png  # noqa: F401 (re-exported)

_EXIF_ORIENTATION = 0x0112
_TRANSPOSING_ORIENTATIONS = {5, 6, 7, 8}  # orientations that swap width and height


@dataclass(frozen=True)
class Box:
    """An object's box; ``label`` is a class index ``0..C-1``, coordinates are pixels with x1/y1 exclusive."""

    label: int
    x0: float
    y0: float
    x1: float
    y1: float


@dataclass(frozen=True)
class Sample:
    """One image with its image-level labels and, when known, its label map and boxes."""

    stem: str
    image_path: Path
    labels: tuple[int, ...]
    mask_path: Path | None
    boxes: tuple[Box, ...] = ()


@dataclass
class WeakDataset:
    """What every loader returns: class names plus samples, with the readers that validate what they read."""

    class_names: tuple[str, ...]
    samples: list[Sample]
    root: Path
    split: str

    def __post_init__(self) -> None:
        # Stems name every output file (CAMs, pseudo-masks), so two samples sharing one would overwrite each other.
        seen: set[str] = set()
        for sample in self.samples:
            if sample.stem in seen:
                raise DataError(sample.image_path, f"sample stem {sample.stem!r} appears twice in split {self.split!r}")
            seen.add(sample.stem)

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def subset(self, samples: list[Sample]) -> WeakDataset:
        """This dataset restricted to ``samples``, keeping its type (a COCO subset still rasterises masks)."""
        narrowed = copy.copy(self)
        narrowed.samples = list(samples)
        return narrowed

    def label_vector(self, sample: Sample) -> np.ndarray:
        """Multi-hot float32 target of length C (the BCE target of multi-label classification)."""
        vector = np.zeros(self.num_classes, dtype=np.float32)
        vector[list(sample.labels)] = 1.0
        return vector

    def load_image(self, sample: Sample) -> np.ndarray:
        """The image as uint8 (H, W, 3), EXIF orientation applied; a corrupt file raises DataError naming it."""
        return read_image(sample.image_path)

    def has_mask(self, sample: Sample) -> bool:
        """Whether :meth:`load_mask` can return a label map for ``sample`` (evaluation skips those without)."""
        return sample.mask_path is not None

    def load_mask(self, sample: Sample) -> np.ndarray:
        """The label map as uint8 (H, W), checked against the image's size and the number of classes."""
        mask, source = self._read_mask(sample)
        expected = image_size(sample.image_path)
        if mask.shape != expected:
            raise DataError(
                source,
                f"label map is {mask.shape[1]}x{mask.shape[0]} (WxH) but image {sample.image_path.name} "
                f"is {expected[1]}x{expected[0]}",
            )
        bad = np.unique(mask[(mask > self.num_classes) & (mask != IGNORE_INDEX)])
        if bad.size:
            raise DataError(
                source,
                f"label values {bad.tolist()} exceed the {self.num_classes} classes "
                f"(allowed: 0 background, 1..{self.num_classes}, {IGNORE_INDEX} ignore)",
            )
        return mask

    def _read_mask(self, sample: Sample) -> tuple[np.ndarray, Path]:
        """Raw label map and the file to blame if it is inconsistent; loaders without mask files override it."""
        if sample.mask_path is None:
            raise DataError(sample.image_path, "this sample has no label map")
        return read_label_png(sample.mask_path), sample.mask_path


def image_size(path: Path) -> tuple[int, int]:
    """(height, width) after EXIF orientation, from the header only, so masks can be checked without decoding."""
    try:
        with Image.open(path) as img:
            width, height = img.size
            orientation = img.getexif().get(_EXIF_ORIENTATION, 1)
    except FileNotFoundError:
        raise DataError(path, "image file not found") from None
    except (Image.DecompressionBombError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(path, f"cannot read image ({exc.__class__.__name__}: {exc})") from None
    return (width, height) if orientation in _TRANSPOSING_ORIENTATIONS else (height, width)


def same_size_groups(dataset: WeakDataset, batch_size: int) -> Iterator[list[Sample]]:
    """Consecutive samples of equal image size, at most ``batch_size`` a group, so that a batch is one tensor.

    The sizes come from the headers (:func:`image_size`): under torchrun every rank knows every batch, so
    that the batches can be dealt to ranks (:func:`scarce.distributed.shard`), without decoding any image.
    """
    batch: list[Sample] = []
    size: tuple[int, int] | None = None
    for sample in dataset.samples:
        sample_size = image_size(sample.image_path)
        if batch and (len(batch) == batch_size or size != sample_size):
            yield batch
            batch = []
        batch.append(sample)
        size = sample_size
    if batch:
        yield batch


def read_class_names(path: str | Path, comment: str | None = None) -> tuple[str, ...]:
    """A class list: one class per line, stripped, blank lines ignored; the order defines the class indices.

    With ``comment`` (e.g. ``"#"``) everything from it to the end of a line is dropped. A line may carry more
    than a name (CUB's ``1 001.Black_footed_Albatross``, a WordNet id and a description): callers split it.
    A missing, non-UTF-8 or empty file, or a line given twice, raises :class:`DataError` naming the file.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DataError(path, "class list not found") from None
    except UnicodeDecodeError as exc:
        raise DataError(path, f"class list is not UTF-8 text ({exc})") from None
    if comment is not None:
        lines = [line.split(comment, 1)[0] for line in lines]
    names = tuple(line.strip() for line in lines if line.strip())
    if not names:
        raise DataError(path, "class list is empty")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise DataError(path, f"class list names {', '.join(map(repr, repeated))} more than once")
    return names


def class_indices(names: Iterable[str], class_names: tuple[str, ...], where: Path, context: str = "") -> tuple[int, ...]:
    """Sorted unique class indices of ``names``; an unknown name raises DataError naming ``where`` (and ``context``)."""
    lookup = {name: index for index, name in enumerate(class_names)}
    indices: set[int] = set()
    for name in names:
        if name not in lookup:
            raise DataError(where, f"{context}unknown class name {name!r}; known classes: {', '.join(class_names)}")
        indices.add(lookup[name])
    return tuple(sorted(indices))


def require_labels(labels: tuple[int, ...], where: Path, allow_empty: bool) -> None:
    """Refuse a sample without foreground labels: for training it is almost always an annotation mistake."""
    if not labels and not allow_empty:
        raise DataError(
            where,
            "no foreground class labels for this image; pass allow_empty=True to the loader "
            "to accept unlabelled images (e.g. a test split)",
        )


def require_image(path: Path, listed_in: Path) -> Path:
    """Fail at load time, naming the list, rather than epochs later when the image is first read."""
    if not path.is_file():
        raise DataError(path, f"image listed in {listed_in} does not exist")
    return path


def labels_from_mask(mask: np.ndarray, num_classes: int, where: Path) -> tuple[int, ...]:
    """Class indices present in a label map (background and ignore excluded)."""
    values = np.unique(mask)
    bad = values[(values > num_classes) & (values != IGNORE_INDEX)]
    if bad.size:
        raise DataError(where, f"label values {bad.tolist()} exceed the {num_classes} classes")
    return tuple(int(v) - 1 for v in values if 0 < v <= num_classes)


LOADERS: dict[str, Callable[..., WeakDataset]] = {}  # layout name → loader(root, split, **options)


def register_loader(*kinds: str) -> Callable[[Callable[..., WeakDataset]], Callable[..., WeakDataset]]:
    """Make a loader openable by name. The loaders register themselves, so this module imports none of them
    (they import it); importing ``scarce.data`` imports them all."""
    def add(loader: Callable[..., WeakDataset]) -> Callable[..., WeakDataset]:
        for kind in kinds:
            LOADERS[kind] = loader
        return loader

    return add


def open_dataset(kind: str, root: str | Path, split: str, **kwargs: Any) -> WeakDataset:
    """Open a dataset by layout name: "voc", "scenes" (the generated benchmark, VOC layout), "coco", "folder"."""
    if kind not in LOADERS:
        raise ConfigError(f"unknown dataset kind {kind!r}; known: {', '.join(sorted(LOADERS))}")
    return LOADERS[kind](root, split, **kwargs)
