"""Fashion-MNIST (Xiao et al. 2017, MIT licence): the real objects of the scenes benchmark and of CIL demos.

Sources, first found wins: an explicit folder, ``$SCARCE_FASHION_MNIST``, the Debian package
``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``), a torchvision ``FashionMNIST/raw`` folder
under ``$TORCH_HOME``/``~/.torch``/``./data``, and last the subset shipped inside scarce
(``assets/fashion_mnist_subset.npz``: 200 train and 50 test images per class, drawn with seed 0), so that
demos and tests never need a download.
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from scarce.errors import DataError

CLASS_NAMES: tuple[str, ...] = (
    "tshirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle_boot",
)
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
SUBSET_ASSET = "fashion_mnist_subset.npz"
_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


@dataclass(frozen=True)
class FashionMNIST:
    """Images ``uint8`` (N, 28, 28) and labels ``int64`` (N,), with where they came from."""

    images: np.ndarray
    labels: np.ndarray
    source: str

    def __len__(self) -> int:
        return len(self.labels)


def read_idx(path: Path) -> np.ndarray:
    """Parse an IDX file (optionally gzipped) into an array; a malformed file raises DataError."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError) as exc:
        raise DataError(path, f"cannot read IDX file ({exc})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(path, "not an unsigned-byte IDX file (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(dims)) if dims else 0
    if len(raw) - header != expected:
        raise DataError(path, f"IDX payload has {len(raw) - header} bytes, header promises {expected}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _find_file(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def candidate_dirs(root: str | Path | None = None) -> list[Path]:
    dirs: list[Path] = []
    if root is not None:
        dirs += [Path(root), Path(root) / "FashionMNIST" / "raw"]
    if os.environ.get("SCARCE_FASHION_MNIST"):
        dirs.append(Path(os.environ["SCARCE_FASHION_MNIST"]))
    dirs.append(DEBIAN_DIR)
    for base in (os.environ.get("TORCH_HOME"), Path.home() / ".torch", Path("data")):
        if base:
            dirs.append(Path(base) / "FashionMNIST" / "raw")
    return dirs


def full_dataset_dir(root: str | Path | None = None) -> Path | None:
    """The first folder holding all four IDX files, or None when only the shipped subset is available."""
    for folder in candidate_dirs(root):
        if all(_find_file(folder, stem) for pair in _FILES.values() for stem in pair):
            return folder
    if root is not None:
        raise DataError(root, "no Fashion-MNIST IDX files (train/t10k images and labels) found here")
    return None


def load_fashion_mnist(split: str = "train", root: str | Path | None = None, subset: bool | None = None) -> FashionMNIST:
    """Load a split ("train" or "test").

    ``subset=None`` uses the full set when present and the shipped subset otherwise; ``True`` forces the
    subset (tests use it for reproducibility across machines); ``False`` requires the full set.
    """
    if split not in _FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    folder = None if subset else full_dataset_dir(root)
    if folder is None:
        if subset is False:
            raise DataError(DEBIAN_DIR, "full Fashion-MNIST not found; install the Debian package dataset-fashion-mnist")
        return load_subset(split)
    img_path = _find_file(folder, _FILES[split][0])
    lbl_path = _find_file(folder, _FILES[split][1])
    assert img_path is not None and lbl_path is not None
    images, labels = read_idx(img_path), read_idx(lbl_path).astype(np.int64)
    if images.ndim != 3 or len(images) != len(labels):
        raise DataError(img_path, f"image array {images.shape} does not match {len(labels)} labels")
    return FashionMNIST(images, labels, source=str(folder))


def load_subset(split: str) -> FashionMNIST:
    with resources.as_file(resources.files("scarce.data") / "assets" / SUBSET_ASSET) as path:
        with np.load(path) as data:
            return FashionMNIST(data[f"{split}_images"], data[f"{split}_labels"].astype(np.int64), source=f"shipped subset ({path.name})")

