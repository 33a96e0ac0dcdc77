"""PlaceboCIL's free image stream: unlabelled images whose classes lie outside the protocol.

The paper draws placebos from "a free image stream, such as Google Images"; the released code reads ImageNet
folders with different degrees of class overlap with CIFAR-100 (``imagenet_no_matching`` by default). Here a
stream is one of:

- ``folder``: an ImageNet-like folder ``ROOT/<class>/<image>.{jpg,jpeg,png}``, with an optional
  ``ROOT/classes.txt`` giving a readable name after each folder name (``n01440764 tench``);
- ``skimage``: the images bundled with scikit-image (``skimage.data``; each file is its own class, named by
  its stem: astronaut, camera, coffee, ...), a stream that is installed everywhere scarce's tests run;
- ``heldout``: the training images of dataset classes the protocol leaves out (e.g. two Fashion-MNIST classes
  when the class order lists eight).

Images are converted to the dataset's channels and size: each file is resized (shorter side to
``tiles × size``), centre-cropped to a square and cut into ``tiles × tiles`` crops, so a few large images give
many small ones (``tiles: 1`` is the usual resize and centre crop).

A stream that shares a class with the protocol is refused unless ``allow_overlap`` is set: class names are
compared case-insensitively with ``_``, ``-`` and spaces made equal (a folder class matches through its folder
name or its readable name). The check cannot see synonyms ("tabby" vs "cat"): choose the folder's classes
with that in mind. Every file is decoded once when the stream is built, before any training, so a missing or
unreadable folder or an image that fails to decode is a :class:`~scarce.errors.DataError` naming it while
nothing has been trained; ``cache`` keeps the decoded crops (the stream's own storage, standing in for the
web: it is not the method's exemplar memory).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from scarce.cil.data import IMAGE_SUFFIXES, CILData, read_class_list, resize_centre_crop
from scarce.cil.protocol import Protocol
from scarce.errors import ConfigError, DataError

SOURCES = ("folder", "skimage", "heldout")


@dataclass
class FreeStreamConfig:
    source: str = "skimage"  # folder | skimage | heldout
    root: str | None = None  # folder: ROOT/<class>/<image>; skimage: default skimage.data's folder
    classes: list[str] | None = None  # folder: only these class folders; heldout: these dataset classes (names or ids)
    tiles: int = 1  # crops per side cut from each image (skimage's ~30 images: 4 gives 16 crops each)
    allow_overlap: bool = False  # accept stream classes that are also protocol classes
    cache: bool = False  # keep the decoded crops in RAM (small streams); else decode on every read

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ConfigError(f"method.placebo.stream.source must be one of {', '.join(SOURCES)}, got {self.source!r}")
        if self.tiles < 1:
            raise ConfigError(f"method.placebo.stream.tiles must be ≥ 1, got {self.tiles}")
        if self.source == "folder" and not self.root:
            raise ConfigError("method.placebo.stream.root: give the free-stream folder (ROOT/<class>/<image>)")


def normalise_name(name: str) -> str:
    return re.sub(r"[\s_\-]+", " ", name.strip().lower())


class FileStream:
    """Image files cut into ``tiles²`` crops of ``size``×``size`` with ``channels`` channels (uint8)."""

    def __init__(self, files: list[Path], class_of_file: list[str], size: int, channels: int, tiles: int,
                 cache: bool) -> None:
        self.files = files
        self.class_of_file = class_of_file
        self.size, self.channels, self.tiles = size, channels, tiles
        self._cache: dict[int, np.ndarray] | None = {} if cache else None
        for i in range(len(files)):  # decode everything once, before any training (errors name the file)
            square = self._square(i)
            if self._cache is not None:
                self._cache[i] = square

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(self.class_of_file))

    def __len__(self) -> int:
        return len(self.files) * self.tiles * self.tiles

    def _square(self, i: int) -> np.ndarray:
        """File ``i`` resized (shorter side ``tiles·size``) and centre-cropped: H×W×C uint8."""
        if self._cache is not None and i in self._cache:
            return self._cache[i]
        from scarce.io import read_image

        img = Image.fromarray(read_image(self.files[i], mode="L" if self.channels == 1 else "RGB"))
        arr = np.array(resize_centre_crop(img, self.size * self.tiles))  # writable, for torch.from_numpy
        return arr[:, :, None] if arr.ndim == 2 else arr

    def load(self, indices: np.ndarray) -> torch.Tensor:
        per_file = self.tiles * self.tiles
        out = torch.empty(len(indices), self.channels, self.size, self.size, dtype=torch.uint8)
        squares: dict[int, np.ndarray] = {}
        for k, index in enumerate(np.asarray(indices, dtype=np.int64)):
            f, t = divmod(int(index), per_file)
            square = squares.setdefault(f, self._square(f))
            r, c = divmod(t, self.tiles)
            crop = square[r * self.size : (r + 1) * self.size, c * self.size : (c + 1) * self.size]
            out[k] = torch.from_numpy(crop).permute(2, 0, 1)
        return out


class HeldOutStream:
    """Training images of dataset classes outside the protocol."""

    def __init__(self, data: CILData, class_ids: Sequence[int]) -> None:
        self.images = data.train
        self.indices = np.flatnonzero(np.isin(data.train.labels, list(class_ids)))
        self.class_names = tuple(data.class_names[c] for c in class_ids)

    def __len__(self) -> int:
        return len(self.indices)

    def load(self, indices: np.ndarray) -> torch.Tensor:
        return self.images.load(self.indices[np.asarray(indices, dtype=np.int64)])


FreeStream = FileStream | HeldOutStream


def build_free_stream(cfg: FreeStreamConfig, data: CILData, protocol: Protocol) -> FreeStream:
    """The stream ``cfg`` describes, shaped like ``data``'s images, checked against ``protocol``'s classes."""
    sample = data.train.load(np.array([0]))
    channels, size = int(sample.shape[1]), int(sample.shape[-1])
    protocol_names = {normalise_name(data.class_names[c]): data.class_names[c] for c in protocol.class_order}
    if cfg.source == "heldout":
        return _heldout(cfg, data, protocol)
    if cfg.source == "skimage":
        root = Path(cfg.root) if cfg.root else _skimage_folder()
        folder = _readable_folder(root)
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not files:
            raise DataError(root, "no images (.jpg/.jpeg/.png) in the scikit-image data folder")
        classes = {p.stem: (p.stem,) for p in files}
        class_of_file = [p.stem for p in files]
    else:
        root = _readable_folder(Path(cfg.root or ""))
        names = dict(read_class_list(root / "classes.txt")) if (root / "classes.txt").is_file() else {}
        folders = sorted(p for p in root.iterdir() if p.is_dir())
        if cfg.classes is not None:
            missing = [c for c in cfg.classes if not (root / c).is_dir()]
            if missing:
                raise DataError(root, f"class folders {missing} named by method.placebo.stream.classes are missing")
            folders = [root / c for c in cfg.classes]
        files, class_of_file, classes = [], [], {}
        for folder in folders:
            found = sorted(p for p in _readable_folder(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            files += found
            class_of_file += [folder.name] * len(found)
            if found:
                classes[folder.name] = (folder.name, names.get(folder.name, folder.name))
        if not files:
            raise DataError(root, "no class folders with images: expected ROOT/<class>/<image>.jpg|.jpeg|.png")
    shared = sorted({protocol_names[normalise_name(n)] for aliases in classes.values() for n in aliases
                     if normalise_name(n) in protocol_names})
    if shared and not cfg.allow_overlap:
        raise DataError(root, f"the free stream shares classes {shared} with the protocol; remove them from the "
                              "stream or set method.placebo.stream.allow_overlap=true")
    return FileStream(files, class_of_file, size, channels, cfg.tiles, cfg.cache)


def _readable_folder(path: Path) -> Path:
    if not path.exists():
        raise DataError(path, "free-stream folder not found")
    if not path.is_dir():
        raise DataError(path, "the free stream must be a folder")
    if not os.access(path, os.R_OK | os.X_OK):
        raise DataError(path, "cannot read the free-stream folder (permission denied)")
    return path


def _skimage_folder() -> Path:
    try:
        import skimage.data
    except ImportError:
        raise ConfigError("method.placebo.stream.source: skimage needs scikit-image installed "
                          "(or give stream.root, or use source folder)") from None
    return Path(skimage.data.__file__).parent


def _heldout(cfg: FreeStreamConfig, data: CILData, protocol: Protocol) -> HeldOutStream:
    in_protocol = set(protocol.class_order)
    if cfg.classes is None:
        ids = [c for c in range(data.n_classes) if c not in in_protocol]
        if not ids:
            raise ConfigError("method.placebo.stream: source heldout needs classes outside the protocol, but "
                              "protocol.class_order lists every class of the dataset (list fewer classes there)")
    else:
        ids = []
        for item in cfg.classes:
            if item in data.class_names:
                ids.append(data.class_names.index(item))
            elif str(item).isdigit() and int(item) < data.n_classes:
                ids.append(int(item))
            else:
                raise ConfigError(f"method.placebo.stream.classes: unknown class {item!r}; known: "
                                  f"{', '.join(data.class_names)} or ids 0..{data.n_classes - 1}")
    shared = sorted(data.class_names[c] for c in set(ids) & in_protocol)
    if shared and not cfg.allow_overlap:
        raise ConfigError(f"method.placebo.stream.classes: {shared} are classes of the protocol; hold them out "
                          "of protocol.class_order or set method.placebo.stream.allow_overlap=true")
    return HeldOutStream(data, ids)
