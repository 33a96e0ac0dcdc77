"""Training: resume after a kill reaches the same weights; a NaN loss stops with the checkpoint kept."""

from __future__ import annotations

import pickle

import pytest
import torch

from scarce.data.base import open_dataset
from scarce.errors import ScarceError, TrainingError
from scarce.models import ModelConfig, build_classifier
from scarce.training import AugmentConfig, TrainConfig, load_trained, train_classifier
from scarce.training.trainer import epoch_order, poly_lr

CFG = TrainConfig(epochs=2, batch_size=4, lr=0.05, augment=AugmentConfig(crop_size=48), seed=7, checkpoint_every=2)


def fresh_model(num_classes: int):
    torch.manual_seed(0)
    return build_classifier(ModelConfig(backbone="test_efficientnet", pretrained=None), num_classes)


class Killed(Exception):
    pass


def test_resume_after_kill_gives_identical_weights(tiny_scenes, tmp_path):
    data = open_dataset("scenes", tiny_scenes, "train")
    straight = fresh_model(data.num_classes)
    train_classifier(straight, data, CFG, tmp_path / "a", progress=False)

    def kill(epoch: int, step: int) -> None:
        if step == 5:  # mid-epoch of epoch 2 (4 steps per epoch): the last checkpoint is at step 4
            raise Killed

    interrupted = fresh_model(data.num_classes)
    with pytest.raises(Killed):
        train_classifier(interrupted, data, CFG, tmp_path / "b", progress=False, on_step=kill)
    assert not (tmp_path / "b" / "model.pt").exists()
    with pytest.raises(ScarceError, match="--resume"):
        train_classifier(fresh_model(data.num_classes), data, CFG, tmp_path / "b", progress=False)
    resumed = fresh_model(data.num_classes)
    train_classifier(resumed, data, CFG, tmp_path / "b", progress=False, resume=True)

    a = load_trained(fresh_model(data.num_classes), tmp_path / "a" / "model.pt").state_dict()
    b = load_trained(fresh_model(data.num_classes), tmp_path / "b" / "model.pt").state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert (tmp_path / "a" / "train_log.csv").read_text() == (tmp_path / "b" / "train_log.csv").read_text()


class StepClock:
    """A clock that advances 10 s per optimisation step and at no other time, so seconds count steps."""

    def __init__(self) -> None:
        self.now = 1000.0

    def perf_counter(self) -> float:
        return self.now

    def on_step(self, kill_at: int | None = None):
        def step(epoch: int, step: int) -> None:
            self.now += 10.0
            if step == kill_at:
                raise Killed
        return step


def test_training_seconds_add_up_over_a_resume(tiny_scenes, tmp_path, monkeypatch):
    """The cost of a killed and resumed run is the time of the 8 steps it kept (2 epochs of 4): the steps redone
    after the last checkpoint count once; a checkpoint written before checkpoints kept time gives None."""
    import types

    import scarce.training.trainer as trainer

    clock = StepClock()
    monkeypatch.setattr(trainer, "time", types.SimpleNamespace(perf_counter=clock.perf_counter))
    data = open_dataset("scenes", tiny_scenes, "train")
    straight = train_classifier(fresh_model(data.num_classes), data, CFG, tmp_path / "a", progress=False,
                                on_step=clock.on_step())
    assert straight.seconds == 80.0
    with pytest.raises(Killed):  # killed after step 5; the last checkpoint is step 4 (40 s), step 5 is lost
        train_classifier(fresh_model(data.num_classes), data, CFG, tmp_path / "b", progress=False,
                         on_step=clock.on_step(kill_at=5))
    assert torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["seconds"] == 40.0
    resumed = train_classifier(fresh_model(data.num_classes), data, CFG, tmp_path / "b", progress=False,
                               resume=True, on_step=clock.on_step())
    assert resumed.seconds == 80.0  # 40 s before the kill + steps 5 to 8 again

    with pytest.raises(Killed):
        train_classifier(fresh_model(data.num_classes), data, CFG, tmp_path / "c", progress=False,
                         on_step=clock.on_step(kill_at=5))
    state = torch.load(tmp_path / "c" / "checkpoint.pt", weights_only=True)
    del state["seconds"]  # as written before checkpoints kept the time
    torch.save(state, tmp_path / "c" / "checkpoint.pt")
    old = train_classifier(fresh_model(data.num_classes), data, CFG, tmp_path / "c", progress=False, resume=True)
    assert old.seconds is None


def test_resume_refuses_another_configuration(tiny_scenes, tmp_path):
    data = open_dataset("scenes", tiny_scenes, "train")
    one_epoch = TrainConfig(epochs=1, batch_size=8, augment=AugmentConfig(crop_size=48))
    with pytest.raises(Killed):
        train_classifier(fresh_model(data.num_classes), data, one_epoch, tmp_path, progress=False,
                         on_step=lambda e, s: (_ for _ in ()).throw(Killed()) if s == 1 else None)
    assert not (tmp_path / "checkpoint.pt").exists()  # killed inside epoch 1: checkpoints are written at epoch ends
    train_classifier(fresh_model(data.num_classes), data, one_epoch, tmp_path, progress=False, resume=True)
    other = TrainConfig(epochs=1, batch_size=8, lr=0.5, augment=AugmentConfig(crop_size=48))
    (tmp_path / "model.pt").unlink()
    with pytest.raises(ScarceError, match="another configuration"):
        train_classifier(fresh_model(data.num_classes), data, other, tmp_path, progress=False, resume=True)


def test_nan_loss_stops_and_keeps_checkpoint(tiny_scenes, tmp_path):
    data = open_dataset("scenes", tiny_scenes, "train")
    model = fresh_model(data.num_classes)
    cfg = TrainConfig(epochs=2, batch_size=8, augment=AugmentConfig(crop_size=48))
    steps_per_epoch = -(-len(data) // cfg.batch_size)

    def poison(epoch: int, step: int) -> None:
        if step == steps_per_epoch + 1:  # inside epoch 2, after epoch 1's checkpoint: the next loss is NaN
            with torch.no_grad():
                model.classifier.weight.fill_(float("nan"))

    with pytest.raises(TrainingError, match=r"non-finite loss .* epoch 2, step"):
        train_classifier(model, data, cfg, tmp_path, progress=False, on_step=poison)
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert state["step"] == steps_per_epoch
    assert torch.isfinite(state["model"]["classifier.weight"]).all()


class _Marker:
    """Unpickling this creates the file it names: a stand-in for code a tampered checkpoint would run."""

    def __init__(self, path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_load_trained_does_not_run_code_from_the_checkpoint(tmp_path):
    model = fresh_model(3)
    marker = tmp_path / "code_ran"
    torch.save({"model": model.state_dict(), "objective": {}, "extra": _Marker(marker)}, tmp_path / "model.pt")
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        load_trained(fresh_model(3), tmp_path / "model.pt")
    assert not marker.exists()


def test_poly_schedule_and_epoch_order():
    assert poly_lr(0.1, 0, 100, 0.9) == pytest.approx(0.1)
    assert poly_lr(0.1, 50, 100, 0.9) == pytest.approx(0.1 * 0.5**0.9)
    assert epoch_order(1, 0, 10) == epoch_order(1, 0, 10)
    assert sorted(epoch_order(1, 3, 10)) == list(range(10))
    assert epoch_order(1, 0, 10) != epoch_order(1, 1, 10)
