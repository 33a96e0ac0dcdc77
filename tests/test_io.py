"""scarce.io: no process-wide side effects, outputs with the usual permissions, strict JSON, unreadable images
named."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from scarce.errors import DataError
from scarce.io import read_image, read_json, write_json, write_text


def test_importing_scarce_io_never_touches_the_umask():
    probe = ("import os\ncalls = []\nreal = os.umask\n"
             "os.umask = lambda mask: calls.append(mask) or real(mask)\n"
             "import scarce.io\nprint(calls)\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=True)
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("umask, mode", [(0o077, 0o600), (0o022, 0o644), (0o002, 0o664)])
def test_atomic_writes_get_the_mode_of_the_current_umask(tmp_path, umask, mode):
    previous = os.umask(umask)  # set after scarce.io was imported: the write must still honour it
    try:
        write_text(tmp_path / "out.txt", "x")
        (tmp_path / "plain.txt").write_text("x")  # what open() itself makes under this umask
    finally:
        os.umask(previous)
    assert (tmp_path / "out.txt").stat().st_mode & 0o777 == mode
    assert (tmp_path / "plain.txt").stat().st_mode & 0o777 == mode


def test_decompression_bomb_is_a_data_error_naming_the_file(tmp_path, monkeypatch):
    path = tmp_path / "huge.png"
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 1600 pixels > 2 × 100: Pillow refuses to decode
    with pytest.raises(DataError, match="DecompressionBombError") as caught:
        read_image(path)
    assert caught.value.path == path


def _strict(text: str):
    """RFC 8259 JSON: Python's parser accepts NaN and Infinity only through ``parse_constant``."""
    def reject(name: str):
        raise ValueError(f"not JSON: {name}")
    return json.loads(text, parse_constant=reject)


def test_undefined_scores_are_written_as_null_at_any_depth(tmp_path):
    path = tmp_path / "metrics.json"
    obj = {"miou": 0.5, "iou": [0.75, math.nan, np.float32("nan"), 0.25], "fp": float("inf"),
           "nested": {"curve": (np.float64(0.1), -math.inf), "array": np.array([1.5, np.nan]),
                      "objects": np.array([np.nan, "a"], dtype=object), "ints": np.arange(2)},
           "count": np.int64(3), "flag": True, "name": "cam", "none": None}
    write_json(path, obj)
    parsed = _strict(path.read_text())  # the old writer's NaN / Infinity tokens fail here
    assert parsed == {"miou": 0.5, "iou": [0.75, None, None, 0.25], "fp": None,
                      "nested": {"curve": [0.1, None], "array": [1.5, None], "objects": [None, "a"], "ints": [0, 1]},
                      "count": 3, "flag": True, "name": "cam", "none": None}
    assert read_json(path) == parsed
    # numeric readers get NaN back where the value was undefined
    assert np.isnan(np.asarray(parsed["iou"], dtype=np.float64)).tolist() == [False, True, True, False]
