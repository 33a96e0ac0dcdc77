"""benchmarks/mix_labels.py: the pixel counts behind its fractions, on a hand-made label map."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from scarce.errors import ConfigError
from scarce.singlestage import SingleStageRun, load_config


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, Path(__file__).parents[1] / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


mix_labels = _load("mix_labels")
label_oracle = _load("singlestage_label_oracle")


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


def test_fractions_by_hand_and_without_foreground():
    counts = {"a": np.array([3, 2, 1, 1, 5, 3])}
    table = mix_labels.fractions(counts, np.array([6, 7, 4]))
    assert table["a"] == pytest.approx({"gt fg labelled right": 3 / 7, "gt fg labelled background": 2 / 7,
                                        "gt fg labelled another class": 1 / 7, "gt fg ignored (255)": 1 / 7,
                                        "precision of fg labels": 3 / 5})
    assert table["M_fg (EP's pasted region)"] == pytest.approx({"area / gt fg area": 6 / 7, "gt fg inside M_fg": 4 / 7})
    empty = mix_labels.fractions({"a": np.zeros(6, dtype=np.int64)}, np.zeros(3, dtype=np.int64))
    values = [v for row in empty.values() for v in row.values()]
    assert values == [0.0] * 7


def test_the_diagnostics_name_an_unfinished_run_and_never_train_it(tmp_path):
    """Both diagnostics read a finished network; on a run killed before ``train/model.pt`` they must not train."""
    run_dir = tmp_path / "run"
    SingleStageRun(load_config(), run_dir, progress=False).write_config()
    with pytest.raises(ConfigError, match="run: no trained network"):
        mix_labels.measure(run_dir)
    with pytest.raises(ConfigError, match="run: no trained network"):
        label_oracle.main([str(run_dir)])
    assert not (run_dir / "train").exists()
