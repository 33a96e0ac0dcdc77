"""Datasets for class-incremental learning: Fashion-MNIST, CIFAR-100 (python pickle layout) and an
ImageNet-subset folder layout, all exposed as an :class:`ImageSet` (``labels`` plus ``load(indices)`` giving a
``uint8`` tensor N×C×H×W), and the batch preprocessing (normalisation, crop/flip augmentation).
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol as TypingProtocol

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from scarce.data.base import read_class_names
from scarce.errors import DataError

FASHION_MNIST_STATS = ((0.2860,), (0.3530,))
CIFAR100_STATS = ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))
IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
IMAGE_SUFFIXES = {".jpeg", ".jpg", ".png"}


class ImageSet(TypingProtocol):
    labels: np.ndarray

    def __len__(self) -> int: ...

    def load(self, indices: np.ndarray) -> torch.Tensor: ...


class ArrayImages:
    """Images held in memory as a ``uint8`` tensor N×C×H×W."""

    def __init__(self, images: np.ndarray | torch.Tensor, labels: np.ndarray) -> None:
        images = images if isinstance(images, torch.Tensor) else torch.from_numpy(np.array(images))
        if images.dtype != torch.uint8:
            raise ValueError(f"images must be uint8, got {images.dtype}")
        if images.ndim == 3:
            images = images.unsqueeze(1)
        self.images = images.contiguous()
        self.labels = np.asarray(labels, dtype=np.int64)
        if len(self.images) != len(self.labels):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.labels)

    def load(self, indices: np.ndarray) -> torch.Tensor:
        return self.images[torch.as_tensor(np.asarray(indices, dtype=np.int64))]

    def subset(self, indices: np.ndarray) -> "ArrayImages":
        return ArrayImages(self.load(indices), self.labels[indices])


def resize_centre_crop(img: Image.Image, side: int) -> Image.Image:
    """Resize (bilinear) so that the shorter side is ``side``, then crop the central ``side``×``side`` square."""
    scale = side / min(img.size)
    w, h = max(side, round(img.size[0] * scale)), max(side, round(img.size[1] * scale))
    img = img.resize((w, h), Image.BILINEAR)
    left, top = (w - side) // 2, (h - side) // 2
    return img.crop((left, top, left + side, top + side))


class FolderImages:
    """Image files decoded on demand, resized (shorter side) and centre-cropped to ``size``×``size``."""

    def __init__(self, paths: list[Path], labels: np.ndarray, size: int, cache: bool = False) -> None:
        self.paths = list(paths)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.size = size
        self._cache: dict[int, torch.Tensor] | None = {} if cache else None

    def __len__(self) -> int:
        return len(self.labels)

    def _decode(self, i: int) -> torch.Tensor:
        if self._cache is not None and i in self._cache:
            return self._cache[i]
        from scarce.io import read_image

        img = resize_centre_crop(Image.fromarray(read_image(self.paths[i])), self.size)
        out = torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).contiguous()
        if self._cache is not None:
            self._cache[i] = out
        return out

    def load(self, indices: np.ndarray) -> torch.Tensor:
        return torch.stack([self._decode(int(i)) for i in indices])

    def subset(self, indices: np.ndarray) -> "FolderImages":
        return FolderImages([self.paths[i] for i in indices], self.labels[indices], self.size, self._cache is not None)


@dataclass
class CILData:
    """A train and a test :class:`ImageSet` with class names and normalisation statistics."""

    name: str
    train: ImageSet
    test: ImageSet
    class_names: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    default_augment: str
    source: str

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    def subsample(self, train_per_class: int | None, test_per_class: int | None, seed: int = 0) -> "CILData":
        """Keep at most that many images per class (drawn with ``seed``, independent of the run seed)."""
        rng = np.random.default_rng(seed)

        def pick(images: ImageSet, k: int | None) -> ImageSet:
            if k is None:
                return images
            keep = []
            for c in np.unique(images.labels):
                idx = np.flatnonzero(images.labels == c)
                keep.append(idx if len(idx) <= k else np.sort(rng.choice(idx, k, replace=False)))
            return images.subset(np.sort(np.concatenate(keep)))  # type: ignore[attr-defined]

        return CILData(self.name, pick(self.train, train_per_class), pick(self.test, test_per_class),
                       self.class_names, self.mean, self.std, self.default_augment, self.source)


# --- loaders ----------------------------------------------------------------------------------------

def load_fashion_mnist_cil(root: str | Path | None = None, subset: bool | None = None) -> CILData:
    from scarce.data.fashion_mnist import CLASS_NAMES, load_fashion_mnist

    train = load_fashion_mnist("train", root=root, subset=subset)
    test = load_fashion_mnist("test", root=root, subset=subset)
    return CILData("fashion_mnist", ArrayImages(train.images, train.labels), ArrayImages(test.images, test.labels),
                   CLASS_NAMES, *FASHION_MNIST_STATS, default_augment="none", source=train.source)


def _unpickle(path: Path) -> dict:
    if not path.is_file():
        raise DataError(path, "CIFAR-100 file not found (expected the python layout: meta, train, test)")
    try:
        with open(path, "rb") as fh:
            obj = pickle.load(fh, encoding="bytes")
    except Exception as exc:  # a truncated or foreign file raises many different exception types
        raise DataError(path, f"corrupt CIFAR-100 pickle ({exc.__class__.__name__}: {exc})") from None
    if not isinstance(obj, dict):
        raise DataError(path, f"corrupt CIFAR-100 pickle: expected a dict, got {type(obj).__name__}")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def load_cifar100(root: str | Path) -> CILData:
    """CIFAR-100 from its python layout: ``root/{meta,train,test}`` (``cifar-100-python`` folder)."""
    root = Path(root)
    if (root / "cifar-100-python").is_dir():
        root = root / "cifar-100-python"
    meta = _unpickle(root / "meta")
    names = meta.get("fine_label_names")
    if not isinstance(names, list) or len(names) != 100:
        raise DataError(root / "meta", "corrupt CIFAR-100 pickle: 'fine_label_names' must list 100 names")
    names = tuple(n.decode("latin1") if isinstance(n, bytes) else str(n) for n in names)
    sets = []
    for split in ("train", "test"):
        path = root / split
        d = _unpickle(path)
        data, labels = d.get("data"), d.get("fine_labels")
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
            got = getattr(data, "shape", type(data).__name__)
            raise DataError(path, f"corrupt CIFAR-100 pickle: 'data' must be a uint8 N×3072 array, got {got}")
        labels = np.asarray(labels if labels is not None else [], dtype=np.int64)
        if len(labels) != len(data) or (len(labels) and (labels.min() < 0 or labels.max() >= 100)):
            raise DataError(path, f"corrupt CIFAR-100 pickle: {len(labels)} 'fine_labels' in 0..99 expected for {len(data)} images")
        sets.append(ArrayImages(data.reshape(-1, 3, 32, 32), labels))
    return CILData("cifar100", sets[0], sets[1], names, *CIFAR100_STATS, default_augment="crop_flip", source=str(root))


def read_class_list(path: str | Path) -> list[tuple[str, str]]:
    """Class-list file: one class per line, ``wnid`` optionally followed by a readable name; ``#`` comments."""
    out = []
    for line in read_class_names(path, comment="#"):
        wnid, _, name = line.partition(" ")
        out.append((wnid, name.strip() or wnid))
    wnids = [wnid for wnid, _ in out]
    repeated = sorted({w for w in wnids if wnids.count(w) > 1})
    if repeated:
        raise DataError(path, f"class list repeats {repeated}")
    return out


def load_imagenet_subset(root: str | Path, class_list: str | Path | None = None, image_size: int = 224,
                         cache: bool = False) -> CILData:
    """ImageNet-subset folder: ``root/train/<wnid>/*.JPEG``, ``root/val/<wnid>/*.JPEG`` and a class list
    (default ``root/classes.txt``) giving the classes and their ids (line order)."""
    root = Path(root)
    classes = read_class_list(class_list or root / "classes.txt")
    sets = []
    for split in ("train", "val"):
        paths, labels = [], []
        for label, (wnid, _) in enumerate(classes):
            folder = root / split / wnid
            if not folder.is_dir():
                raise DataError(folder, f"class folder of {wnid} missing from the {split} split")
            files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise DataError(folder, "no images (.JPEG/.jpg/.png) in this class folder")
            paths += files
            labels += [label] * len(files)
        sets.append(FolderImages(paths, np.array(labels), image_size, cache=cache))
    names = tuple(name for _, name in classes)
    return CILData("imagenet_subset", sets[0], sets[1], names, *IMAGENET_STATS, default_augment="crop_flip", source=str(root))


# --- batch preprocessing ----------------------------------------------------------------------------

class Preprocess:
    """uint8 batch → normalised float batch, with optional random crop (zero padding) and horizontal flip.

    Randomness comes only from the ``generator`` passed in, so a step can be replayed exactly.
    """

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...], augment: str = "none", pad: int = 4) -> None:
        if augment not in ("none", "crop_flip", "flip"):
            raise ValueError(f"augment must be none, flip or crop_flip, got {augment!r}")
        self.mean = torch.tensor(mean).view(1, -1, 1, 1)
        self.std = torch.tensor(std).view(1, -1, 1, 1)
        self.augment = augment
        self.pad = pad

    @property
    def flips(self) -> bool:
        return self.augment in ("flip", "crop_flip")

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None,
                 within: tuple[int, int] | None = None) -> torch.Tensor:
        """``within = (start, total)``: ``images`` are items ``start, start + 1, ...`` of a batch of ``total``
        (one process's part of a batch split over processes); they get that batch's draws for those items."""
        x = images.float().div_(255.0)
        start, total = within or (0, len(x))
        part = slice(start, start + len(x))
        if generator is not None and self.augment == "crop_flip":
            _, _, h, w = x.shape
            p = self.pad
            padded = F.pad(x, (p, p, p, p))
            offs = torch.randint(0, 2 * p + 1, (total, 2), generator=generator)[part]
            x = torch.stack([padded[i, :, oy : oy + h, ox : ox + w] for i, (oy, ox) in enumerate(offs.tolist())])
        if generator is not None and self.flips:
            flip = torch.rand(total, generator=generator)[part] < 0.5
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
        return (x - self.mean) / self.std

    def to_pixels(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised images back to the pixel scale 0-255 (float, clipped to the valid range; on the CPU)."""
        return (x.detach().cpu() * self.std + self.mean).mul_(255.0).clamp_(0.0, 255.0)
