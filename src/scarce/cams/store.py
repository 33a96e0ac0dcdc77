"""CAMs on disk: one ``<stem>.npz`` per image holding ``cam`` (K, H, W) float16 and ``keys`` (K,) class indices.

float16 halves the size of IRN's float32 ``.npy`` files; maps are in [0, 1], where float16's absolute
error is below 5e-4, far under any threshold step used for masks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from scarce.errors import DataError
from scarce.io import save_npz


def save_cam(path: str | Path, cams: np.ndarray, keys: np.ndarray | list[int]) -> None:
    keys = np.asarray(keys, dtype=np.int16)
    if cams.shape[0] != len(keys):
        raise ValueError(f"{len(keys)} keys for {cams.shape[0]} maps")
    save_npz(path, cam=np.asarray(cams, dtype=np.float16), keys=keys)


def load_cam(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(cams float32 (K, H, W), keys int64 (K,)); a missing or damaged file raises DataError naming it."""
    path = Path(path)
    try:
        with np.load(path) as data:
            return data["cam"].astype(np.float32), data["keys"].astype(np.int64)
    except FileNotFoundError:
        raise DataError(path, "CAM file not found (run `scarce cam` for this split first)") from None
    except (OSError, KeyError, ValueError) as exc:
        raise DataError(path, f"not a scarce CAM file ({exc})") from None
