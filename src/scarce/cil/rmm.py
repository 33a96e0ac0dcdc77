"""RMM (Liu, Schiele, Sun, NeurIPS 2021): a memory policy learned with REINFORCE on pseudo CIL tasks.

Memory model. In phase i the memory holds the old-class exemplars and the new-class data the phase trains on,
within a fixed budget ``T_i = B(n_old) + |D_i|``: what the protocol's exemplar memory ``B`` (``protocol.memory``
with the phase's old classes) plus all new data would take, so a run with RMM never holds more images than the
same run without it. The policy only moves images between the two parts:

- **Level-1** picks ``m`` from ``old_rates``: ``round(m·|D_i|)`` new-class images are dropped and their slots go
  to the old classes, ``old_slots = B(n_old) + round(m·|D_i|)``, split evenly (``old_slots // n_old`` per old
  class; a class that stored fewer keeps what it has).
- **Level-2** picks, for every new class, a weight from ``class_factors``; the kept new images
  ``N_i = |D_i| − round(m·|D_i|)`` are shared in proportion to the weights (at least one image per class, at most
  the class's size; largest remainders break ties, then the lower label). This is a per-class allocation;
  the released code has two groups (classes above / below the median loss), not reproduced.

The kept images of a class are its herding ranking on the phase's starting features (random under
``selection: random``). After training, the whole phase's memory stays (re-ranked by herding on the trained
model), so the next phase can give its old classes more than ``B`` exemplars; the base phase keeps all its
data (``T_0 = |D_0|``). :class:`scarce.cil.memory.MemoryLimits` carries each phase's budget and quotas, and the
trainer's budget check after every phase enforces them. With ``m = 0`` a phase trains on exactly the batches it
would without RMM; the memory after it still holds the phase's new-class data, which NME class means then
see. Class-balanced finetuning (PODNet's, LUCIR's option) cuts every class to the smallest class's count
(:meth:`~scarce.cil.memory.Memory.balanced_indices`): fed the unequal memory, PODNet's CNN head learnt the new
classes' majority (old-class accuracy 1-37 % after the last phase at 5 exemplars per class, new 95-99 %).

Policy. State ``s_i = [i / N, n_old / n_seen, B(n_old) / T_i]`` (scale-free, so that a policy trained on small
pseudo tasks applies to the real ones). Level-1: a two-layer MLP on ``s_i``, softmax over ``old_rates``. Level-2:
a two-layer MLP on ``[s_i, m, z_c]`` for each new class c, softmax over ``class_factors``, where ``z_c`` is the
class's feature spread (``1 − |mean of its normalised features|`` on the phase's starting backbone), standardised
over the phase's new classes. Output layers start at zero: the untrained policy is uniform, and its greedy
action is ``m = old_rates[0]`` with equal weights.

Training (paper Sec. 4). Pseudo CIL tasks are built from the **base-phase classes only**: each episode shuffles
them, puts ``pseudo_base`` of them in a pseudo-base phase and splits the rest into pseudo-incremental phases; the
base classes' training images are split once into pseudo-training and held-out images
(``val_fraction`` per class). An episode runs the configured learner through its pseudo task with actions sampled
from the policy; the reward is the average incremental accuracy (primary head) on the held-out images; one
REINFORCE step ``θ += lr·(R − b)·∇ Σ_i log π(a_i | s_i)`` (Adam) follows, with ``b`` the moving average of past
rewards. The test split is sealed during policy training (:class:`SealedImages`): touching it raises. The
policy is then frozen and applied greedily (most probable action) to the real phases.

Departures from the released code (``rmm_train.py`` in PyCIL / online-placebos), stated because numbers differ:
it trains with DDPG on pseudo tasks sampled over the whole target dataset with a reward on the test set; here
REINFORCE (the paper), base classes only, held-out training images. It subsamples the new data with replacement
and applies the phase's rate to the exemplars stored at the phase's end; here without replacement, and the old
slots of phase i are those of phase i's own action. Pseudo tasks use the largest number of equal pseudo phases
not above the protocol's N that divides the pseudo-incremental classes. The paper's episode count is not stated
in what we could read: ``episodes: 200`` is the released ``num_episodes``.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from scarce.cil.config import CILConfig, RMMConfig
from scarce.cil.data import CILData
from scarce.cil.memory import MemoryLimits, herding_selection, random_selection
from scarce.cil.metrics import AccuracyMatrix, compute_metrics
from scarce.cil.protocol import Protocol, Scenario
from scarce.errors import ConfigError, DataError, ScarceError

if TYPE_CHECKING:
    from scarce.cil.trainer import Trainer

POLICY_FILE = "rmm_policy.pt"
POLICY_LOG = "rmm_policy.json"


class SealedSplitRead(ScarceError):
    """Something read the test split while the RMM policy was being trained (a bug, never a user error)."""


class SealedImages:
    """Stands in for the test split during policy training: any access raises :class:`SealedSplitRead`."""

    def __init__(self, what: str = "the test split") -> None:
        self.what = what

    def _refuse(self) -> NoReturn:
        raise SealedSplitRead(f"RMM policy training touched {self.what}; its reward must come from held-out training images")

    @property
    def labels(self) -> np.ndarray:
        self._refuse()

    def __len__(self) -> int:
        self._refuse()

    def load(self, indices: np.ndarray) -> torch.Tensor:
        self._refuse()


# --- the memory split ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PhaseSplit:
    """One phase's memory: budget ``total`` = ``old_slots`` + the kept new images ``new_counts``."""

    total: int
    old_slots: int
    old_quota: int  # per old class
    new_counts: dict[int, int]  # new label -> kept training images
    rate: float  # Level-1 action m
    weights: dict[int, float]  # Level-2 action, per new label

    def limits(self, old_labels: range) -> MemoryLimits:
        quotas = {c: self.old_quota for c in old_labels} | dict(self.new_counts)
        return MemoryLimits(self.total, quotas)

    def to_dict(self) -> dict[str, Any]:
        return {"total": self.total, "old_slots": self.old_slots, "old_quota": self.old_quota, "rate": self.rate,
                "new_counts": {str(c): n for c, n in self.new_counts.items()},
                "weights": {str(c): w for c, w in self.weights.items()}}


def allocate(total: int, weights: dict[int, float], caps: dict[int, int]) -> dict[int, int]:
    """Share ``total`` images among classes in proportion to ``weights``: at least one each, at most ``caps[c]``
    (water-filling: a class whose share exceeds its cap is filled and leaves the pool), remainders to the largest
    fractional parts (then the lower label)."""
    labels = sorted(weights)
    if not labels or not len(labels) <= total <= sum(caps[c] for c in labels):
        raise ValueError(f"cannot share {total} images among {len(labels)} classes of sizes {caps}")
    counts = {c: 1 for c in labels}
    room = {c: caps[c] - 1 for c in labels}
    rest = total - len(labels)
    free = [c for c in labels if room[c] > 0]
    while free and rest:
        wsum = sum(weights[c] for c in free)
        full = [c for c in free if rest * weights[c] / wsum >= room[c]]
        if not full:
            shares = {c: rest * weights[c] / wsum for c in free}
            floors = {c: math.floor(shares[c]) for c in free}
            for c in free:
                counts[c] += floors[c]
            left = rest - sum(floors.values())
            for c in sorted(free, key=lambda c: (-(shares[c] - floors[c]), c))[:left]:
                counts[c] += 1
            break
        for c in full:
            counts[c] += room[c]
            rest -= room[c]
            free.remove(c)
    return counts


def split_memory(old_budget: int, n_old: int, sizes: dict[int, int], rate: float,
                 weights: dict[int, float]) -> PhaseSplit:
    """The phase's split for Level-1 action ``rate`` and Level-2 ``weights`` (see the module docstring)."""
    if n_old < 1:
        raise ValueError("the base phase has no old classes to split the memory with")
    data = sum(sizes.values())
    moved = min(math.floor(rate * data + 0.5), data - len(sizes))  # every new class keeps at least one image
    kept = data - moved
    total = old_budget + data
    old_slots = total - kept
    return PhaseSplit(total, old_slots, old_slots // n_old, allocate(kept, weights, sizes), rate, dict(weights))


# --- the policy and its update ---------------------------------------------------------------------------------

@dataclass
class Action:
    rate_index: int
    factor_indices: dict[int, int]
    log_prob: torch.Tensor  # log π(a | s), Level-1 plus Level-2


class MemoryPolicy(nn.Module):
    """Hierarchical policy: Level-1 over the old-class rates, Level-2 over per-class weights given the rate."""

    STATE_DIM = 3

    def __init__(self, rates: list[float], factors: list[float], hidden: int) -> None:
        super().__init__()
        self.register_buffer("rates", torch.tensor(rates, dtype=torch.float32))
        self.register_buffer("factors", torch.tensor(factors, dtype=torch.float32))
        self.level1 = nn.Sequential(nn.Linear(self.STATE_DIM, hidden), nn.Tanh(), nn.Linear(hidden, len(rates)))
        self.level2 = nn.Sequential(nn.Linear(self.STATE_DIM + 2, hidden), nn.Tanh(), nn.Linear(hidden, len(factors)))
        for head in (self.level1[-1], self.level2[-1]):  # uniform at the start
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)

    def act(self, state: torch.Tensor, class_features: dict[int, float], *,
            generator: torch.Generator | None) -> Action:
        """Sample an action (``generator`` given) or take the most probable one (``None``: the frozen policy)."""
        logp1 = F.log_softmax(self.level1(state), dim=0)
        a1 = _choose(logp1, generator)
        log_prob = logp1[a1]
        factors: dict[int, int] = {}
        if len(class_features) > 1:  # one new class takes all the kept images whatever its weight
            labels = sorted(class_features)
            z = torch.tensor([class_features[c] for c in labels], dtype=torch.float32)
            inputs = torch.cat([state.expand(len(labels), -1), self.rates[a1].expand(len(labels), 1), z[:, None]], 1)
            logp2 = F.log_softmax(self.level2(inputs), dim=1)
            for row, c in enumerate(labels):
                factors[c] = _choose(logp2[row], generator)
                log_prob = log_prob + logp2[row, factors[c]]
        return Action(a1, factors, log_prob)


def _choose(log_probs: torch.Tensor, generator: torch.Generator | None) -> int:
    if generator is None:
        return int(torch.argmax(log_probs))
    return int(torch.multinomial(log_probs.detach().exp(), 1, generator=generator))


class Reinforce:
    """REINFORCE (Williams 1992) with a moving-average reward baseline.

    ``update(log_prob, reward)`` takes one optimiser step on ``−(R − b)·log π(a)``, i.e. ascends
    ``(R − b)·∇ log π(a)``, then moves ``b ← momentum·b + (1 − momentum)·R``; ``b`` starts at the first reward.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, momentum: float) -> None:
        self.optimizer = optimizer
        self.momentum = momentum
        self.baseline: float | None = None

    def update(self, log_prob: torch.Tensor, reward: float) -> float:
        """One step; returns the advantage ``R − b`` it used."""
        b = reward if self.baseline is None else self.baseline
        advantage = reward - b
        self.optimizer.zero_grad(set_to_none=True)
        (-advantage * log_prob).backward()
        self.optimizer.step()
        self.baseline = self.momentum * b + (1 - self.momentum) * reward
        return advantage


def new_policy(cfg: RMMConfig, seed: int) -> MemoryPolicy:
    from scarce.cil.trainer import derive_seed

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, "rmm-policy"))
        return MemoryPolicy(cfg.old_rates, cfg.class_factors, cfg.hidden)


def load_policy(path: str | Path, cfg: RMMConfig) -> MemoryPolicy:
    """A policy written by a run (``RUN/rmm_policy.pt``); its actions must be this config's."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "RMM policy file not found (rmm.policy names the rmm_policy.pt of an earlier run)")
    try:
        stored = torch.load(path, map_location="cpu", weights_only=True)
        policy = MemoryPolicy(list(stored["old_rates"]), list(stored["class_factors"]), int(stored["hidden"]))
        policy.load_state_dict(stored["state"])
    except Exception as exc:
        raise DataError(path, f"not a readable RMM policy ({exc.__class__.__name__}: {exc})") from None
    if (list(stored["old_rates"]), list(stored["class_factors"])) != (list(cfg.old_rates), list(cfg.class_factors)):
        raise ConfigError(f"{path}: the policy was trained with old_rates {stored['old_rates']} and class_factors "
                          f"{stored['class_factors']}, the config asks for {cfg.old_rates} and {cfg.class_factors}")
    return policy


def _policy_file(policy: MemoryPolicy, cfg: RMMConfig) -> dict[str, Any]:
    return {"state": policy.state_dict(), "old_rates": list(cfg.old_rates), "class_factors": list(cfg.class_factors),
            "hidden": cfg.hidden}


# --- the allocator the trainer calls ------------------------------------------------------------------------

class RMMAllocator:
    """The trainer's memory component: before every phase it sets the memory's limits and the new-class data the
    phase trains on. ``sample`` (a generator) draws actions and keeps their log-probabilities (policy training);
    without it the policy acts greedily and is trained first if it has not been (the real run)."""

    def __init__(self, cfg: RMMConfig, policy: MemoryPolicy | None = None,
                 sample: torch.Generator | None = None) -> None:
        self.cfg = cfg
        self.policy = policy
        self.sample = sample
        self.kept: dict[int, dict[int, np.ndarray]] = {}  # phase -> new label -> kept training indices
        self.splits: dict[int, PhaseSplit] = {}
        self.log_probs: list[torch.Tensor] = []
        self.training: dict[str, Any] | None = None  # the policy training's log (real runs)

    @classmethod
    def for_run(cls, cfg: CILConfig, protocol: Protocol) -> "RMMAllocator":
        """A real run's allocator; a bad policy file or a protocol without pseudo tasks fails here, before phase 0."""
        assert cfg.rmm is not None
        if cfg.rmm.policy:
            allocator = cls(cfg.rmm, load_policy(cfg.rmm.policy, cfg.rmm))
            allocator.training = {"loaded_from": cfg.rmm.policy}
            return allocator
        pseudo_config(cfg, protocol, 0)
        return cls(cfg.rmm)

    def scenario(self, phase: int, scenario: Scenario) -> Scenario:
        """The scenario phase ``phase`` trains on: its new classes cut to the kept images."""
        return scenario.restricted(self.kept[phase]) if phase in self.kept else scenario

    def begin_phase(self, trainer: "Trainer", phase: int) -> None:
        protocol, scenario, memory = trainer.protocol, trainer.scenario, trainer.memory
        if phase == 0:  # no action: the base phase trains on, and then keeps, all its data
            sizes = {c: len(scenario.class_indices(c)) for c in scenario.labels_of_task(0)}
            memory.set_limits(MemoryLimits(sum(sizes.values()), sizes))
            return
        if self.policy is None:
            self.policy, self.training = obtain_policy(trainer)
        ctx = trainer.context(phase)
        n_old, n_seen = protocol.offsets[phase], protocol.n_seen(phase)
        pools = {c: scenario.class_indices(c) for c in ctx.new_labels}
        features = {c: trainer.learner.extract(ctx, idx) for c, idx in pools.items()}
        old_budget = protocol.memory.budget(n_old)
        total = old_budget + sum(len(p) for p in pools.values())
        state = torch.tensor([phase / protocol.n_phases, n_old / n_seen, old_budget / total], dtype=torch.float32)
        with torch.set_grad_enabled(self.sample is not None):  # the frozen policy needs no graph
            action = self.policy.act(state, class_spread(features), generator=self.sample)
        rate = self.cfg.old_rates[action.rate_index]  # the config's values (the policy's buffers are float32)
        weights = {c: self.cfg.class_factors[action.factor_indices[c]] if action.factor_indices else 1.0 for c in pools}
        split = split_memory(old_budget, n_old, {c: len(p) for c, p in pools.items()}, rate, weights)
        selection = protocol.memory.selection
        # sorted: with every image kept, the phase trains on exactly the batches it would without RMM
        self.kept[phase] = {c: np.sort(pools[c][_keep_order(features[c], split.new_counts[c], selection,
                                                            ctx.generator("rmm-keep", c))]) for c in pools}
        self.splits[phase] = split
        if self.sample is not None:
            self.log_probs.append(action.log_prob)
        memory.set_limits(split.limits(range(n_old)))

    def episode_log_prob(self) -> torch.Tensor:
        return torch.stack(self.log_probs).sum()

    # --- checkpoints and reports ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"policy": None if self.policy is None else self.policy.state_dict(),
                "kept": {p: {c: torch.from_numpy(v) for c, v in k.items()} for p, k in self.kept.items()},
                "splits": {p: s.to_dict() for p, s in self.splits.items()}, "training": self.training}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["policy"] is not None:
            self.policy = MemoryPolicy(self.cfg.old_rates, self.cfg.class_factors, self.cfg.hidden)
            self.policy.load_state_dict(state["policy"])
        self.kept = {int(p): {int(c): v.numpy() for c, v in k.items()} for p, k in state["kept"].items()}
        self.splits = {int(p): PhaseSplit(
            s["total"], s["old_slots"], s["old_quota"], {int(c): n for c, n in s["new_counts"].items()}, s["rate"],
            {int(c): w for c, w in s["weights"].items()}) for p, s in state["splits"].items()}
        self.training = state["training"]

    def describe(self) -> dict[str, Any]:
        """For metrics.json: each phase's split and the policy training's cost."""
        training = None if self.training is None else {k: v for k, v in self.training.items() if k != "episodes"}
        return {"splits": {str(p): s.to_dict() for p, s in sorted(self.splits.items())}, "policy_training": training}


def _keep_order(features: torch.Tensor, n: int, selection: str, generator: torch.Generator) -> np.ndarray:
    """The ``n`` images of a class a phase keeps, as the memory would rank them (herding or random)."""
    if selection == "herding":
        return herding_selection(features, n).numpy()
    return random_selection(len(features), n, generator).numpy()


def class_spread(features: dict[int, torch.Tensor]) -> dict[int, float]:
    """Per class ``1 − |mean of its L2-normalised features|`` (0: all alike), standardised over the classes."""
    spread = {c: 1.0 - float(F.normalize(f.double(), dim=1).mean(0).norm()) for c, f in features.items()}
    values = np.array(list(spread.values()))
    std = float(values.std())
    return {c: 0.0 if std == 0 else (v - float(values.mean())) / std for c, v in spread.items()}


# --- policy training on pseudo tasks ----------------------------------------------------------------------

def obtain_policy(trainer: "Trainer") -> tuple[MemoryPolicy, dict[str, Any]]:
    """The frozen policy of a real run without ``rmm.policy``: trained now on pseudo tasks over the base classes with the test split sealed (written to ``RUN/rmm_policy.pt`` and ``RUN/rmm_policy.json``)."""
    from scarce.io import save_torch, write_json

    cfg = trainer.cfg
    assert cfg.rmm is not None
    sealed = dataclasses.replace(trainer.data, test=SealedImages())
    policy, log = train_policy(cfg, sealed, trainer.protocol, progress=trainer.progress)
    if trainer.persist:
        save_torch(trainer.run_dir / POLICY_FILE, _policy_file(policy, cfg.rmm))
        write_json(trainer.run_dir / POLICY_LOG, log)
    return policy, log


def holdout_split(labels: np.ndarray, classes: list[int], val_fraction: float, cap: int | None,
                  seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Per class: ``round(val_fraction·n)`` (at least 1) held-out images, the rest (at most ``cap``) for training."""
    rng = np.random.RandomState(seed % 2**32)
    train, val = [], []
    for c in classes:
        idx = np.flatnonzero(labels == c)
        if len(idx) < 2:
            raise ConfigError(f"rmm: base class {c} has {len(idx)} training image(s); pseudo tasks need at least 2")
        idx = idx[rng.permutation(len(idx))]
        n_val = max(1, round(val_fraction * len(idx)))
        val.append(idx[:n_val])
        train.append(idx[n_val:][:cap])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


def pseudo_config(cfg: CILConfig, protocol: Protocol, episode: int) -> CILConfig:
    """The run config of one pseudo task: a shuffle of the base classes, ``pseudo_base`` of them first."""
    from scarce.cil.trainer import derive_seed

    r = cfg.rmm
    assert r is not None
    base = list(protocol.class_order[: protocol.n_base])
    n_pb = max(1, round(r.pseudo_base * len(base)))
    rest = len(base) - n_pb
    if rest < 1:
        raise ConfigError(f"rmm: {len(base)} base class(es) leave none for pseudo-incremental phases "
                          f"(rmm.pseudo_base={r.pseudo_base}); RMM needs at least 2 base classes")
    want = min(r.pseudo_phases or protocol.n_phases, rest)
    n_phases = max(k for k in range(1, want + 1) if rest % k == 0)
    order = [base[i] for i in np.random.RandomState(derive_seed(cfg.seed, "rmm-order", episode) % 2**32).permutation(len(base))]
    spec = protocol.memory
    size = spec.size if spec.mode == "per_class" else max(len(base), round(spec.size * len(base) / protocol.n_classes))
    memory = dataclasses.replace(cfg.protocol.memory, size=size)
    epochs = r.pseudo_epochs or cfg.train.epochs
    return dataclasses.replace(
        cfg, seed=derive_seed(cfg.seed, "rmm-episode", episode) % 2**31,
        protocol=dataclasses.replace(cfg.protocol, class_order=order, n_base=n_pb, n_phases=n_phases, increment=None,
                                     memory=memory),
        train=dataclasses.replace(cfg.train, epochs=epochs, base_epochs=r.pseudo_epochs or cfg.train.base_epochs,
                                  checkpoint_every=0, keep_phase_checkpoints=False),
    )


def train_policy(cfg: CILConfig, data: CILData, protocol: Protocol, *,
                 progress: bool = False) -> tuple[MemoryPolicy, dict[str, Any]]:
    """REINFORCE on ``cfg.rmm.episodes`` pseudo tasks over the base classes (see the module docstring).

    ``data.test`` must be :class:`SealedImages`: the pseudo tasks' evaluation images are held-out training
    images of the base classes, and any read of the test split raises."""
    from scarce.cil.trainer import Trainer, derive_seed, make_generator

    if not isinstance(data.test, SealedImages):
        raise AssertionError("RMM policy training must receive the test split sealed (SealedImages)")
    r = cfg.rmm
    assert r is not None
    start = time.perf_counter()
    train_idx, val_idx = holdout_split(data.train.labels, list(protocol.class_order[: protocol.n_base]),
                                       r.val_fraction, r.pseudo_train_per_class, derive_seed(cfg.seed, "rmm-holdout"))
    subset = data.train.subset  # type: ignore[attr-defined]
    pseudo = dataclasses.replace(data, train=subset(train_idx), test=subset(val_idx),
                                 source=f"{data.source} (RMM pseudo tasks: base-class training images only)")
    policy = new_policy(r, cfg.seed)
    reinforce = Reinforce(torch.optim.Adam(policy.parameters(), lr=r.lr), r.baseline_momentum)
    episodes = []
    for episode in _progress_range(r.episodes, progress):
        pcfg = pseudo_config(cfg, protocol, episode)
        allocator = RMMAllocator(r, policy, sample=make_generator(cfg.seed, "rmm-actions", episode))
        trainer = Trainer(pcfg, ".", progress=False, data=pseudo, allocator=allocator)
        rows = trainer.simulate()[trainer.learner.primary_head]
        reward = compute_metrics(AccuracyMatrix(rows, trainer.scenario.task_sizes()))["average_incremental_accuracy"] / 100
        advantage = reinforce.update(allocator.episode_log_prob(), reward)
        episodes.append({"episode": episode, "reward": reward, "advantage": advantage,
                         "rates": [s.rate for _, s in sorted(allocator.splits.items())],
                         "pseudo_protocol": trainer.protocol.describe()})
    policy.eval()
    for p in policy.parameters():
        p.requires_grad_(False)
    return policy, {"episodes_run": len(episodes), "time_s": time.perf_counter() - start,
                    "pseudo_train_images": int(len(train_idx)), "held_out_images": int(len(val_idx)),
                    "final_baseline": reinforce.baseline, "episodes": episodes}


def _progress_range(n: int, progress: bool):
    from tqdm.auto import tqdm

    return tqdm(range(n), desc="RMM policy (pseudo tasks)", leave=False, disable=not progress)
