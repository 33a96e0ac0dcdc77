"""RMM: the REINFORCE update, the memory split, the sealed test split during policy training, bad input."""

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from scarce.cil import Memory, MemoryBudgetExceeded, MemorySpec, load_config, run
from scarce.cil import rmm as rmm_module
from scarce.cil.memory import MemoryLimits
from scarce.cil.rmm import (
    MemoryPolicy, Reinforce, RMMAllocator, SealedImages, SealedSplitRead, allocate, split_memory, train_policy,
)
from scarce.cil.trainer import Trainer, load_data
from scarce.errors import ConfigError, DataError

from cil_helpers import tiny_config

FAST = ("rmm.episodes=2", "rmm.pseudo_epochs=1")
SMALL = ("data.train_per_class=12", "data.test_per_class=4")


# --- REINFORCE ------------------------------------------------------------------------------------------------

def test_reinforce_step_equals_the_hand_gradient():
    # softmax policy over 3 arms: d log pi(a) / d theta = onehot(a) - pi; plain SGD, so
    # theta' = theta + lr * (R - b) * (onehot(a) - pi), with b the moving average (the first reward at first).
    theta0 = [0.1, -0.2, 0.3]
    theta = torch.nn.Parameter(torch.tensor(theta0, dtype=torch.float64))
    learner = Reinforce(torch.optim.SGD([theta], lr=0.5), momentum=0.9)
    assert learner.update(torch.log_softmax(theta, 0)[0], 0.4) == 0.0  # b starts at the first reward
    assert theta.tolist() == theta0 and learner.baseline == pytest.approx(0.4)
    advantage = learner.update(torch.log_softmax(theta, 0)[2], 0.9)
    z = sum(math.exp(t) for t in theta0)
    pi = [math.exp(t) / z for t in theta0]
    expected = [t + 0.5 * (0.9 - 0.4) * ((k == 2) - pi[k]) for k, t in enumerate(theta0)]
    assert advantage == pytest.approx(0.5)
    assert theta.tolist() == pytest.approx(expected, abs=1e-12)
    assert learner.baseline == pytest.approx(0.9 * 0.4 + 0.1 * 0.9)


def test_reinforce_converges_to_the_best_arm_of_a_bandit():
    means = np.array([0.2, 0.5, 0.9, 0.4])  # arm 2 is best; rewards are noisy
    rng = np.random.default_rng(0)
    g = torch.Generator().manual_seed(0)
    logits = torch.nn.Parameter(torch.zeros(4))
    learner = Reinforce(torch.optim.SGD([logits], lr=0.5), momentum=0.9)
    for _ in range(400):
        logp = torch.log_softmax(logits, 0)
        arm = int(torch.multinomial(logp.detach().exp(), 1, generator=g))
        learner.update(logp[arm], float(means[arm] + rng.normal(0, 0.1)))
    assert float(torch.softmax(logits.detach(), 0)[2]) > 0.95


# --- the memory split -------------------------------------------------------------------------------------

def test_allocate_hand_cases():
    # 30 images, weights 0.5 : 1.5 -> one each, then 28 shared 7 : 21
    assert allocate(30, {2: 0.5, 3: 1.5}, {2: 30, 3: 30}) == {2: 8, 3: 22}
    # class 2's share (47 * 4/6 = 31.3) exceeds its 9 free places: filled to 10, the other 38 split 19 : 19
    assert allocate(50, {0: 1.0, 1: 1.0, 2: 4.0}, {0: 30, 1: 30, 2: 10}) == {0: 20, 1: 20, 2: 10}
    # one image left for three equal shares: the lowest label takes it
    assert allocate(4, {0: 1.0, 1: 1.0, 2: 1.0}, {0: 10, 1: 10, 2: 10}) == {0: 2, 1: 1, 2: 1}
    with pytest.raises(ValueError, match="cannot share 2 images among 3 classes"):
        allocate(2, {0: 1.0, 1: 1.0, 2: 1.0}, {0: 10, 1: 10, 2: 10})


def test_split_memory_hand_case():
    # 2 old classes at 5 exemplars (B = 10), two new classes of 30 images (|D| = 60), m = 0.5:
    # T = 10 + 60 = 70; 30 new images move to the old classes: 40 old slots (20 per class), 30 new (8 + 22)
    s = split_memory(10, 2, {2: 30, 3: 30}, 0.5, {2: 0.5, 3: 1.5})
    assert (s.total, s.old_slots, s.old_quota, s.new_counts) == (70, 40, 20, {2: 8, 3: 22})
    assert s.old_slots + sum(s.new_counts.values()) == s.total
    # m = 1 would drop every new image: each new class keeps one, the other 58 slots go to the old classes
    s = split_memory(10, 2, {2: 30, 3: 30}, 1.0, {2: 1.0, 3: 1.0})
    assert (s.old_slots, s.old_quota, s.new_counts) == (68, 34, {2: 1, 3: 1})


def test_memory_limits_are_enforced():
    mem = Memory(MemorySpec("per_class", 5))
    mem.exemplars = {0: np.arange(10), 1: np.arange(10, 20)}
    mem.n_seen = 2
    mem.set_limits(MemoryLimits(14, {0: 7, 1: 7}))
    assert mem.counts() == {0: 7, 1: 7} and mem.exemplars[1].tolist() == list(range(10, 17))  # heads kept
    mem.limits = MemoryLimits(12, {0: 7, 1: 7})
    with pytest.raises(MemoryBudgetExceeded, match="14 exemplars .* budget 12"):
        mem.assert_within_budget()


def fixed_policy(rate_index: int, factor_index: int) -> MemoryPolicy:
    """A policy whose most probable actions are the given ones, whatever the state."""
    cfg = tiny_config("lucir", "rmm.hidden=4").rmm
    policy = MemoryPolicy(cfg.old_rates, cfg.class_factors, cfg.hidden)
    with torch.no_grad():
        policy.level1[-1].bias[rate_index] = 1.0
        policy.level2[-1].bias[factor_index] = 1.0
    return policy


def test_rmm_memory_respects_the_budget_in_every_phase(tmp_path):
    # tiny protocol: 30 training images per class, B2 + 2 + 2, protocol memory 5 per class; policy fixed at
    # m = 0.5 and equal class weights. Hand counts per phase (old exemplars + kept new data = budget T):
    #   phase 0: T = 60, trains on all 60 and keeps them (30 per class);
    #   phase 1: T = 10 + 60 = 70; 30 new images move: old quota 40 // 2 = 20, new 15 + 15 -> 40 + 30 = 70;
    #   phase 2: T = 20 + 60 = 80; old quota 50 // 4 = 12 (48), new 15 + 15 -> 78 <= 80.
    cfg = tiny_config("lucir", "rmm.hidden=4")
    seen: dict[int, dict[int, int]] = {}

    def record(trainer, phase, epoch, step):
        if phase not in seen:
            idx = trainer.learner.train_indices(trainer.context(phase))
            labels, counts = np.unique(trainer.scenario.train_targets[idx], return_counts=True)
            seen[phase] = dict(zip(labels.tolist(), counts.tolist()))
            assert len(np.unique(idx)) == len(idx)  # no image twice

    trainer = Trainer(cfg, tmp_path / "run", progress=False, callbacks=[record],
                      allocator=RMMAllocator(cfg.rmm, fixed_policy(5, 1)))
    result = trainer.run()
    assert seen == {0: {0: 30, 1: 30}, 1: {0: 20, 1: 20, 2: 15, 3: 15}, 2: {0: 12, 1: 12, 2: 12, 3: 12, 4: 15, 5: 15}}
    splits = result.metrics["memory_policy"]["splits"]
    assert [(s["total"], s["old_slots"], s["rate"]) for s in splits.values()] == [(70, 40, 0.5), (80, 50, 0.5)]
    assert result.metrics["memory_per_class"] == {"0": 12, "1": 12, "2": 12, "3": 12, "4": 15, "5": 15}
    for phase, split in splits.items():  # the kept images are the class's own, distinct
        for c, n in split["new_counts"].items():
            kept = trainer.allocator.kept[int(phase)][int(c)]
            assert len(set(kept.tolist())) == n and set(kept.tolist()) <= set(trainer.scenario.class_indices(int(c)).tolist())


def test_keeping_every_new_image_trains_exactly_as_without_rmm(tmp_path):
    # m = 0 moves nothing: every phase trains on the same images in the same batches as plain LUCIR (the old
    # classes' exemplars are the head of the same herding ranking), so the CNN accuracy matrix is identical
    plain = run(tiny_config("lucir"), tmp_path / "plain", progress=False)
    cfg = tiny_config("lucir", "rmm.hidden=4")
    rmm = Trainer(cfg, tmp_path / "rmm", progress=False, allocator=RMMAllocator(cfg.rmm, fixed_policy(0, 0))).run()
    assert [s["rate"] for s in rmm.metrics["memory_policy"]["splits"].values()] == [0.0, 0.0]
    assert rmm.matrices["cnn"].per_task == plain.matrices["cnn"].per_task


# --- policy training never reads the test split --------------------------------------------------------------

def test_sealed_split_refuses_every_access():
    sealed = SealedImages()
    for touch in (lambda: sealed.load(np.array([0])), lambda: sealed.labels, lambda: len(sealed)):
        with pytest.raises(SealedSplitRead, match="touched the test split"):
            touch()


def test_policy_training_reads_only_held_out_training_images():
    cfg = tiny_config("lucir", *FAST)
    data = load_data(cfg)
    trainer = Trainer(cfg, ".", progress=False, data=data)
    sealed = dataclasses.replace(data, test=SealedImages())  # any read of the test split raises
    policy, log = train_policy(cfg, sealed, trainer.protocol)
    # base classes 0, 1 of 30 images: 6 held out each (20 %), 24 each for the pseudo tasks
    assert (log["episodes_run"], log["pseudo_train_images"], log["held_out_images"]) == (2, 48, 12)
    assert all(e["pseudo_protocol"].startswith("B1, N=1 phases of 1") for e in log["episodes"])
    with pytest.raises(AssertionError, match="sealed"):
        train_policy(cfg, data, trainer.protocol)


def test_a_run_trains_its_policy_with_the_test_split_sealed(tmp_path, monkeypatch):
    calls = []
    real = rmm_module.train_policy

    def spy(cfg, data, protocol, **kwargs):
        calls.append(type(data.test))
        return real(cfg, data, protocol, **kwargs)

    monkeypatch.setattr(rmm_module, "train_policy", spy)
    result = run(tiny_config("podnet", *FAST, *SMALL, "method.balanced_finetune_epochs=1"), tmp_path / "run",
                 progress=False)
    assert calls == [SealedImages]
    assert result.metrics["memory_policy"]["policy_training"]["episodes_run"] == 2
    log = json.loads((tmp_path / "run" / "rmm_policy.json").read_text())
    assert len(log["episodes"]) == 2 and all(0 <= e["reward"] <= 1 for e in log["episodes"])
    # the stored policy is applied as it is: same splits, no training
    again = run(tiny_config("podnet", *FAST, *SMALL, "method.balanced_finetune_epochs=1",
                            f"rmm.policy={tmp_path / 'run' / 'rmm_policy.pt'}"), tmp_path / "again", progress=False)
    assert calls == [SealedImages]
    assert again.metrics["memory_policy"]["splits"] == result.metrics["memory_policy"]["splits"]


@pytest.mark.parametrize("method", ["lucir_aanets", "podnet_aanets"])
def test_rmm_runs_with_the_aanets_learners(method, tmp_path):
    result = Trainer(tiny_config(method, "rmm.hidden=4", "method.aggregation_lr=0.01",
                                 *SMALL),
                     tmp_path, progress=False, allocator=RMMAllocator(tiny_config("lucir", "rmm.hidden=4").rmm,
                                                                       fixed_policy(3, 2))).run()
    assert [s["old_slots"] for s in result.metrics["memory_policy"]["splits"].values()] == [10 + 7, 20 + 7]
    assert result.metrics["complete"]


# --- bad input ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("override, message", [
    ("rmm.old_rates=[0.5,1.5]", "rmm.old_rates: must be a non-empty list, each in"),
    ("rmm.episodes=0", "rmm.episodes: must be"),
    ("rmm.val_fraction=1.0", "rmm.val_fraction: must be in"),
    ("rmm.steps=3", "rmm: unknown key"),
])
def test_bad_rmm_config_is_a_config_error(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, ["method.name=lucir", override])


def test_bad_policy_files_are_named(tmp_path):
    missing = tmp_path / "none.pt"
    with pytest.raises(DataError, match="none.pt.*not found"):
        run(tiny_config("lucir", f"rmm.policy={missing}"), tmp_path / "a", progress=False)
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a policy")
    with pytest.raises(DataError, match="corrupt.pt.*not a readable RMM policy"):
        run(tiny_config("lucir", f"rmm.policy={corrupt}"), tmp_path / "b", progress=False)
    other = tmp_path / "other.pt"
    cfg = tiny_config("lucir", "rmm.old_rates=[0.0,0.5]").rmm
    torch.save(rmm_module._policy_file(MemoryPolicy(cfg.old_rates, cfg.class_factors, cfg.hidden), cfg), other)
    with pytest.raises(ConfigError, match="other.pt: the policy was trained with old_rates"):
        run(tiny_config("lucir", f"rmm.policy={other}"), tmp_path / "c", progress=False)


def test_one_base_class_cannot_make_pseudo_tasks(tmp_path):
    cfg = tiny_config("lucir", "protocol.n_base=1", "protocol.n_phases=1", "protocol.class_order=[0,1]", *FAST)
    with pytest.raises(ConfigError, match="RMM needs at least 2 base classes"):
        run(cfg, tmp_path, progress=False)


def test_resume_after_a_kill_replays_the_rmm_run(tmp_path):
    # killed mid-phase 2 (after its policy was trained and its split made): the checkpoint carries the policy,
    # the kept images and the memory limits, so the resumed run ends exactly as an uninterrupted one
    cfg = tiny_config("lucir", *FAST, *SMALL, "train.epochs=2")
    full = run(cfg, tmp_path / "full", progress=False)

    class Kill(Exception):
        pass

    def kill(trainer, phase, epoch, step):
        if phase == 2 and epoch == 1:
            raise Kill

    with pytest.raises(Kill):
        Trainer(cfg, tmp_path / "killed", progress=False, callbacks=[kill]).run()
    assert torch.load(tmp_path / "killed" / "checkpoints" / "last.pt", weights_only=True)["phase"] == 2
    resumed = run(cfg, tmp_path / "killed", resume=True, progress=False)
    assert resumed.matrices["cnn"].per_task == full.matrices["cnn"].per_task
    assert resumed.metrics["memory_policy"]["splits"] == full.metrics["memory_policy"]["splits"]
    assert resumed.metrics["memory_per_class"] == full.metrics["memory_per_class"]
