"""scarce's exceptions keep their type, fields and message across processes."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from scarce.errors import ConfigError, DataError, TrainingError


class _Unreadable(Dataset):
    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int) -> torch.Tensor:
        raise DataError(Path("images") / f"{index}.jpg", "cannot read image (truncated)")


def test_dataloader_worker_error_reaches_the_caller_as_data_error() -> None:
    loader = DataLoader(_Unreadable(), batch_size=1, num_workers=1)
    with pytest.raises(DataError) as caught:
        next(iter(loader))
    assert str(caught.value) == "images/0.jpg: cannot read image (truncated)"


def test_worker_error_in_main_process_keeps_path_and_problem() -> None:
    with pytest.raises(DataError) as caught:
        next(iter(DataLoader(_Unreadable(), batch_size=1, num_workers=0)))
    assert caught.value.path == Path("images/0.jpg")
    assert caught.value.problem == "cannot read image (truncated)"


@pytest.mark.parametrize("error", [DataError("a/b.png", "label map is 3x4"), DataError(None, "no samples"),
                                   ConfigError("train.lr: must be > 0, got -1"), TrainingError("loss is nan")])
def test_errors_pickle_with_their_fields(error: Exception) -> None:
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error)
    assert str(copy) == str(error)
    assert getattr(copy, "path", None) == getattr(error, "path", None)
    assert getattr(copy, "problem", None) == getattr(error, "problem", None)
