"""CAMs on disk: one ``<stem>.npz`` per image holding ``cam`` (K, H, W) float16 and ``keys`` (K,) class indices,
and, where the method records something about the image (RIB: how many fine-tuning steps ran and why they
stopped), ``notes``: a JSON object. The notes live beside the maps so that a resumed run, or one sharded over
ranks, reports every image and not only those the last process computed.

float16 halves the size of IRN's float32 ``.npy`` files; maps are in [0, 1], where float16's absolute
error is below 5e-4, far under any threshold step used for masks.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any, Callable, TypeVar

import numpy as np

from scarce.errors import DataError
from scarce.io import save_npz

T = TypeVar("T")


def save_cam(path: str | Path, cams: np.ndarray, keys: np.ndarray | list[int],
             notes: dict[str, Any] | None = None) -> None:
    keys = np.asarray(keys, dtype=np.int16)
    if cams.shape[0] != len(keys):
        raise ValueError(f"{len(keys)} keys for {cams.shape[0]} maps")
    extra = {"notes": np.array(json.dumps(notes, allow_nan=False))} if notes else {}
    save_npz(path, cam=np.asarray(cams, dtype=np.float16), keys=keys, **extra)


def load_cam(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(cams float32 (K, H, W), keys int64 (K,)); a missing or damaged file raises DataError naming it."""
    return _read(path, lambda data: (data["cam"].astype(np.float32), data["keys"].astype(np.int64)))


def load_cam_notes(path: str | Path) -> dict[str, Any]:
    """What the method recorded about the image when it wrote ``path`` (``{}`` if nothing)."""
    return _read(path, lambda data: json.loads(str(data["notes"])) if "notes" in data.files else {})


def _read(path: str | Path, read: Callable[[Any], T]) -> T:
    path = Path(path)
    try:
        with np.load(path) as data:
            return read(data)
    except FileNotFoundError:
        raise DataError(path, "CAM file not found (run `scarce cam` for this split first)") from None
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:  # BadZipFile: a truncated file
        raise DataError(path, f"not a scarce CAM file ({exc})") from None
