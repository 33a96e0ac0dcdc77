"""The dead-map diagnostic (benchmarks/dead_maps.py): counts maps that are zero at every pixel, by hand."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from scarce.cams.store import save_cam
from scarce.errors import ConfigError

_SPEC = importlib.util.spec_from_file_location("dead_maps", Path(__file__).parents[1] / "benchmarks" / "dead_maps.py")
dead_maps = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(dead_maps)


def test_counts_zero_maps_and_positive_area(tmp_path):
    folder = tmp_path / "run" / "cams" / "test"
    folder.mkdir(parents=True)
    alive = np.zeros((4, 4), np.float32)
    alive[:2] = 0.5  # half the pixels above 0
    save_cam(folder / "a.npz", np.stack([alive, np.zeros((4, 4), np.float32)]), [1, 3])
    save_cam(folder / "b.npz", np.ones((1, 4, 4), np.float32), [2])
    dead, total, positive = dead_maps.count_dead(tmp_path / "run", "test")
    assert (dead, total) == (1, 3)
    assert positive == pytest.approx((0.5 + 0.0 + 1.0) / 3)


def test_a_run_without_maps_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="no stored CAMs"):
        dead_maps.count_dead(tmp_path, "val")
