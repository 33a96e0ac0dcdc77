"""benchmarks/mix_labels.py: the pixel counts behind its fractions, on a hand-made label map."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from scarce.errors import ConfigError

_SPEC = importlib.util.spec_from_file_location("mix_labels", Path(__file__).parents[1] / "benchmarks" / "mix_labels.py")
mix_labels = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(mix_labels)


def test_label_counts_by_hand():
    truth = np.array([[0, 1, 1, 1],
                      [0, 2, 2, 255],
                      [0, 0, 2, 2]])
    labels = np.array([[1, 1, 0, 255],
                       [0, 2, 1, 1],
                       [255, 0, 2, 0]])
    # gt foreground (7 pixels; the 255 of truth is not scored): right (0,1) (1,1) (2,2) = 3; background (0,2)
    # (2,3) = 2; another class (1,2) = 1; ignored (0,3) = 1. Labelled foreground where scored: (0,0) (0,1) (1,1)
    # (1,2) (2,2) = 5, of which right 3 ((1,3) is labelled 1 but its truth is 255: not scored).
    assert mix_labels.label_counts(labels, truth).tolist() == [3, 2, 1, 1, 5, 3]


def test_an_unfinished_run_is_named_not_trained(tmp_path):
    (tmp_path / "run").mkdir()
    with pytest.raises(ConfigError, match="run: no trained network"):
        mix_labels.measure(tmp_path / "run")
