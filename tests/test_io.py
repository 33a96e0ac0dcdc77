"""scarce.io: no process-wide side effects, outputs with the usual permissions, unreadable images named."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from scarce.errors import DataError
from scarce.io import read_image, write_text


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
