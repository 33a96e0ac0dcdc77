import json

import pytest
import torch

from scarce.cil import run
from scarce.cil.trainer import Trainer
from scarce.errors import ConfigError, TrainingError

from cil_helpers import tiny_config


SMALL = ("data.train_per_class=12", "data.test_per_class=4")


class Kill(Exception):
    pass


def kill_after(n_steps):
    def callback(trainer, phase, epoch, step):
        if trainer.global_step == n_steps:
            raise Kill(f"simulated kill at phase {phase} step {step}")

    return callback


@pytest.mark.parametrize("method, kill_at, extra", [
    ("icarl", 10, ()),
    ("podnet", 5, ("method.balanced_finetune_epochs=2",)),
    ("lucir", 10, ("method.balanced_finetune=true", "method.balanced_finetune_epochs=2",
                   "method.balanced_finetune_milestones=[1]")),
    # killed mid-phase 2: the checkpoint holds the two-branch network, its teacher, the aggregation optimiser
    # (AANets) and the learned exemplar images of phases 0 and 1 (Mnemonics)
    # (12 training images per class: phase 2 runs steps 11-16, checkpoints at 12 and 15)
    ("lucir_aanets", 14, ("method.aggregation_lr=0.01", *SMALL)),
    ("podnet_aanets", 14, ("method.aggregation_lr=0.01", "method.balanced_finetune_epochs=2", *SMALL)),
    ("mnemonics", 14, ("method.outer_lr=1.0", "method.inner_steps=2", *SMALL)),
    # PlaceboCIL: the policy's weights and current arm, the prototypes and the step count of the phase
    ("lucir_placebo", 14, ("method.placebo.stream.cache=true", "method.placebo.candidates=8",
                           "method.placebo.per_step=4", *SMALL)),
])
def test_resume_after_a_kill_gives_the_same_accuracy_matrix(method, kill_at, extra, tmp_path):
    # 2 epochs per phase, checkpoints every 3 steps: the kill lands mid-phase, between two checkpoints.
    # Checkpoints load with weights_only=True (tensors and plain types only).
    cfg = tiny_config(method, "train.epochs=2", *extra)
    full = run(cfg, tmp_path / "full", progress=False)
    with pytest.raises(Kill):
        Trainer(cfg, tmp_path / "killed", progress=False, callbacks=[kill_after(kill_at)]).run()
    state = torch.load(tmp_path / "killed" / "checkpoints" / "last.pt", weights_only=True)
    assert state["stage"] == "train" and state["global_step"] < kill_at
    resumed = run(cfg, tmp_path / "killed", resume=True, progress=False)
    for head in full.matrices:
        assert resumed.matrices[head].per_task == full.matrices[head].per_task
    a = json.loads((tmp_path / "full" / "acc_matrix.json").read_text())
    b = json.loads((tmp_path / "killed" / "acc_matrix.json").read_text())
    assert a == b
    final_a = torch.load(tmp_path / "full" / "checkpoints" / "last.pt", weights_only=True)["learner"]["net"]
    final_b = torch.load(tmp_path / "killed" / "checkpoints" / "last.pt", weights_only=True)["learner"]["net"]
    assert all(torch.equal(final_a[k], final_b[k]) for k in final_a)


def test_resume_at_a_phase_boundary_and_of_a_finished_run(tmp_path):
    cfg = tiny_config("lwf")
    full = run(cfg, tmp_path / "full", progress=False)

    def stop_in_phase_2(trainer, phase, epoch, step):
        if phase == 2:
            raise Kill()

    cfg2 = tiny_config("lwf", "train.checkpoint_every=0")  # only end-of-phase checkpoints
    with pytest.raises(Kill):
        Trainer(cfg2, tmp_path / "b", progress=False, callbacks=[stop_in_phase_2]).run()
    assert (tmp_path / "b" / "checkpoints" / "phase_1.pt").is_file()
    assert json.loads((tmp_path / "b" / "metrics.json").read_text())["complete"] is False
    resumed = run(cfg2, tmp_path / "b", resume=True, progress=False)
    assert resumed.matrices["cnn"].per_task == full.matrices["cnn"].per_task
    again = run(cfg2, tmp_path / "b", resume=True, progress=False)  # finished: nothing to train
    assert again.matrices["cnn"].per_task == full.matrices["cnn"].per_task
    for name in ("acc_matrix.json", "metrics.json", "report.html", "config.yaml"):
        assert (tmp_path / "b" / name).is_file()


def test_resume_refuses_a_different_config_or_a_missing_checkpoint(tmp_path):
    run(tiny_config("finetune"), tmp_path, progress=False)
    with pytest.raises(ConfigError, match=r"different configuration \(train.lr: 0.05 → 0.1"):
        run(tiny_config("finetune", "train.lr=0.1"), tmp_path, resume=True, progress=False)
    with pytest.raises(ConfigError, match="no checkpoint"):
        run(tiny_config("finetune"), tmp_path / "empty", resume=True, progress=False)


def test_nan_loss_names_phase_epoch_step_and_keeps_the_checkpoint(tmp_path, monkeypatch):
    trainer = Trainer(tiny_config("finetune"), tmp_path, progress=False)
    original = trainer.learner.loss
    calls = {"n": 0}

    def poisoned(x, y, ctx):
        loss, logs = original(x, y, ctx)
        calls["n"] += 1
        return (loss * float("nan"), logs) if ctx.phase == 1 and calls["n"] > 6 else (loss, logs)

    monkeypatch.setattr(trainer.learner, "loss", poisoned)
    # phase 0 has 4 steps (60 images, batch 16); the 3rd step of phase 1 (step 2) is the first poisoned one
    with pytest.raises(TrainingError, match=r"non-finite loss .* in phase 1, epoch 0, step 2 of method finetune") as err:
        trainer.run()
    assert "last.pt" in str(err.value)
    state = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    assert (state["phase"], state["stage"], state["epoch"], state["step"], state["global_step"]) == (1, "train", 0, 2, 6)
    assert all(torch.isfinite(v).all() for v in state["learner"]["net"].values() if v.is_floating_point())


def test_same_seed_same_matrix_different_seed_different(tmp_path):
    a = run(tiny_config("icarl", "seed=3"), tmp_path / "a", progress=False)
    b = run(tiny_config("icarl", "seed=3"), tmp_path / "b", progress=False)
    c = run(tiny_config("icarl", "seed=4"), tmp_path / "c", progress=False)
    assert a.matrices["nme"].per_task == b.matrices["nme"].per_task
    assert a.matrices["cnn"].per_task != c.matrices["cnn"].per_task


def test_a_checkpoint_holding_other_objects_is_refused_not_unpickled(tmp_path):
    import numpy as np

    from scarce.io import save_torch

    run(tiny_config("finetune"), tmp_path, progress=False)
    path = tmp_path / "checkpoints" / "last.pt"
    state = torch.load(path, weights_only=True)
    state["rng"]["numpy"] = np.random.get_state()  # format 1 stored numpy's state as numpy objects
    save_torch(path, state)
    with pytest.raises(TrainingError, match=r"last.pt: cannot read checkpoint \(UnpicklingError: .*start the run again"):
        run(tiny_config("finetune"), tmp_path, resume=True, progress=False)
