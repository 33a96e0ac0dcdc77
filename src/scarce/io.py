"""File input/output: atomic writes and image reading that fails with the file's name."""

from __future__ import annotations

import io as _io
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from scarce.errors import DataError

PathLike = str | os.PathLike
IGNORE_INDEX = 255  # label maps: 0 background, c + 1 for class c, 255 "ignore"


def _file_mode() -> int:
    """The mode a newly created file gets (0o666 less the process umask), without changing the umask.

    Linux reports the umask in /proc/self/status; elsewhere a probe file in the temporary folder shows it.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except OSError:
        pass
    with tempfile.TemporaryDirectory() as folder:
        probe = Path(folder) / "probe"
        probe.touch(mode=0o666)
        return probe.stat().st_mode & 0o777


@contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; it replaces ``path`` only if the block succeeds.

    A run killed mid-write therefore never leaves a truncated output behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, _file_mode())  # mkstemp makes 0600 files; outputs should look like any other
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_bytes(path: PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: PathLike, obj: Any) -> None:
    """Strict JSON (RFC 8259), written atomically: an undefined score (NaN, e.g. the IoU of a class absent from
    a split) is written as ``null``, which other languages' parsers accept and ``NaN`` is not; Python reads it
    back as None, and ``np.asarray(values, dtype=float)`` turns None into NaN again."""
    text = json.dumps(_undefined_as_null(obj), indent=2, sort_keys=False, default=_json_default, allow_nan=False)
    write_text(path, text + "\n")


def _undefined_as_null(obj: Any) -> Any:
    """``obj`` with every non-finite float (Python's or numpy's, at any depth) replaced by None."""
    if isinstance(obj, (float, np.floating)):
        return float(obj) if np.isfinite(obj) else None
    if isinstance(obj, dict):
        return {key: _undefined_as_null(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_undefined_as_null(value) for value in obj]
    if isinstance(obj, np.ndarray):  # any dtype: an object array may hold NaN too
        return _undefined_as_null(obj.tolist())
    return obj


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def read_json(path: PathLike) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(path, "file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(path, f"not valid JSON ({exc})") from None


def save_torch(path: PathLike, obj: Any) -> None:
    import torch

    buffer = _io.BytesIO()
    torch.save(obj, buffer)
    write_bytes(path, buffer.getvalue())


def save_image(path: PathLike, image: Image.Image, **kwargs: Any) -> None:
    path = Path(path)
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG"}.get(path.suffix.lower(), None)
    buffer = _io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    write_bytes(path, buffer.getvalue())


def save_npz(path: PathLike, **arrays: np.ndarray) -> None:
    buffer = _io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    write_bytes(path, buffer.getvalue())


def read_image(path: PathLike, mode: str = "RGB") -> np.ndarray:
    """Read an image as a ``uint8`` array (H, W, 3) for RGB, honouring EXIF orientation.

    Any mode (grayscale, palette, RGBA, 16-bit) is converted; a file that is missing or not an image
    raises :class:`DataError` naming it.
    """
    path = Path(path)
    try:
        with Image.open(path) as img:
            img.load()
            img = ImageOps.exif_transpose(img)
            if mode == "RGB" and img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
                img = img.convert("RGBA")
                background = Image.new("RGBA", img.size, (255, 255, 255, 255))
                img = Image.alpha_composite(background, img)
            if img.mode == "I;16" or img.mode == "I":
                arr = np.asarray(img, dtype=np.float64)
                arr = (255 * (arr - arr.min()) / max(arr.max() - arr.min(), 1)).astype(np.uint8)
                img = Image.fromarray(arr)
            return np.asarray(img.convert(mode))
    except FileNotFoundError:
        raise DataError(path, "image file not found") from None
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(path, f"cannot read image ({exc.__class__.__name__}: {exc})") from None


def read_label_png(path: PathLike) -> np.ndarray:
    """Read a label map PNG (VOC palette or plain 8-bit index) as ``uint8`` indices, without colour conversion."""
    path = Path(path)
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in ("P", "L"):
                return np.asarray(img, dtype=np.uint8).copy()
            if img.mode in ("I", "I;16"):
                arr = np.asarray(img)
                if arr.max() > 255:
                    raise DataError(path, f"label values up to {int(arr.max())} do not fit 8 bits")
                return arr.astype(np.uint8)
            raise DataError(path, f"label map must be a palette or 8-bit grayscale PNG, got mode {img.mode}")
    except FileNotFoundError:
        raise DataError(path, "label file not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(path, f"cannot read label map ({exc.__class__.__name__}: {exc})") from None


def voc_palette() -> np.ndarray:
    """The PASCAL VOC colour map, ``uint8`` (256, 3).

    Label ``i`` gets its colour by spreading the bits of ``i`` over the three channels, three bits at a
    time, from the most significant bit of each channel downwards (1 → dark red, 2 → dark green, 15 →
    person pink, 255 → the cream used for "ignore").
    """
    index = np.arange(256)
    palette = np.zeros((256, 3), dtype=np.int64)
    for bit in range(8):
        for channel in range(3):
            palette[:, channel] |= ((index >> (3 * bit + channel)) & 1) << (7 - bit)
    return palette.astype(np.uint8)


def save_label_png(path: PathLike, labels: np.ndarray, palette: bool = True) -> None:
    """Write a label map as an 8-bit PNG, atomically.

    With ``palette`` the file is a palette PNG whose indices are the labels and whose colours are VOC's, so
    it is both viewable and readable back as indices (``scarce.io.read_label_png``); without, plain grayscale.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"label map must have shape (H, W), got {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() > 255):
        raise ValueError(f"labels must fit 8 bits, got values {labels.min()}..{labels.max()}")
    image = Image.fromarray(labels.astype(np.uint8))  # mode L; a palette makes it P with the same indices
    if palette:
        image.putpalette(voc_palette().reshape(-1).tolist())
    buffer = _io.BytesIO()
    image.save(buffer, format="PNG")
    write_bytes(path, buffer.getvalue())
