"""PlaceboCIL (Liu, Li, Schiele & Sun, WACV 2024): the distillation loss computed on unlabelled "placebos"
chosen online from a free image stream (:mod:`scarce.cil.freestream`), as an add-on to any learner that
distils (``lwf``, ``icarl``, ``lucir``, ``podnet``, ``lucir_aanets``, ``podnet_aanets``: ``<name>_placebo``).

From phase 1 on, every training step:

1. reads ``candidates`` images from the stream (a fresh random draw per step: the stream is not stored);
2. scores them with the **evaluation function** on the old model's L2-normalised features: for a target
   class k, ``E(u, k) = d(u, μ_k) + w_old · mean_{o ∈ old} d(u, μ_o) + w_new · mean_{n ∈ new} d(u, μ_n)``,
   d the cosine distance and μ the class prototypes computed at the start of the phase with the old model
   (old classes: mean of the normalised exemplar features; new classes: of all their training images); lower
   is better. The released code's rule (``models/placebo_foster.py``) is ``w_old = w_new = 1`` with every
   seen class as a target;
3. keeps ``per_step`` placebos: the target classes take turns (the first turn rotating with the step), each
   turn taking the remaining candidate with the lowest score for that class — the released per-class greedy
   choice, made within one batch of candidates;
4. runs the placebos through the network together with the labelled batch (one forward, as the released
   code concatenates them) and computes the base learner's own distillation terms (LwF/iCaRL: KD on the
   old-class outputs, LUCIR: less-forget, PODNet: POD-spatial and flat) on the rows ``kd_on`` names; the
   supervised terms see the labelled rows only;
5. drops every candidate and placebo: **mini-batch memory reuse**, nothing from the stream outlives its step
   and the exemplar memory is untouched. ``report()`` measures it: the number of stream images still
   referenced after each batch (weak references to every tensor that held them), 0 when it holds. It also
   gives, per phase, the placebos' mean cosine distance to the prototype of the class they were chosen for
   (``placebo_distance``) beside the old exemplars' own distance to theirs (``exemplar_distance``): how well
   the stream can stand in for old-class data.

**Online policy** (``policy: online``): the action is the evaluation function's weights ``(w_old, w_new)``,
chosen from ``arms`` by Exp3 (Auer et al. 2002) once per epoch; after the epoch the reward is the accuracy
on old-class validation data (``validation_per_class`` exemplars per old class, the last of its herding
ranking, withheld from training in that phase; 0: the old exemplars themselves, also trained on), and the
chosen arm's log-weight grows by ``exploration · reward / p(arm) / n_arms``. The weights carry over from
phase to phase. ``policy: fixed`` uses ``fixed_weights`` every step.

Departures and readings, stated:

- The paper formulates policy learning as an online MDP solved by an online learning algorithm; its exact
  action space and update could not be read from the sources at hand (the talk gives no formula). Here the
  action is the evaluation function's two weights and the learner Exp3, the bandit case of such an online
  MDP; the released rule (1, 1) is one of the default arms.
- The released code (no learned policy) selects 200 placebos per class once per phase from features of the
  whole auxiliary pool, then loads them like a dataset; it indexes the selected image in the original pool
  after deleting earlier picks from the feature array (an index drift). Here selection is per mini-batch
  (the paper's memory-reusing strategy) and indices always refer to the candidate batch, so the drift cannot
  occur.
- ``kd_on: all`` (default) distils on the labelled batch and the placebos, as the released code's
  ``_KD_loss`` on the concatenated batch; ``old_and_placebos`` leaves the new-class images out of the
  distillation and ``placebos`` distils on the placebos only (the talk's "instead of new-class data").
- Placebos are augmented like the training images; the released code applies ``RandomResizedCrop`` to its
  ImageNet images before resizing them.
"""

from __future__ import annotations

import dataclasses
import math
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from scarce.cil.freestream import FreeStream, FreeStreamConfig, build_free_stream
from scarce.cil.methods.base import Learner, PhaseContext
from scarce.cil.protocol import Protocol
from scarce.errors import ConfigError

KD_ON = ("all", "old_and_placebos", "placebos")


@dataclass
class PlaceboParams:
    stream: FreeStreamConfig = field(default_factory=FreeStreamConfig)
    candidates: int = 128  # stream images evaluated per training step (one mini-batch, then discarded)
    per_step: int = 32  # placebos kept per step for the distillation
    kd_on: str = "all"  # all | old_and_placebos | placebos
    targets: str = "old"  # old: placebos of old classes (the paper); seen: of every seen class (the released code)
    policy: str = "online"  # online (Exp3 over arms, rewarded on old-class validation data) | fixed
    fixed_weights: list[float] = field(default_factory=lambda: [1.0, 1.0])  # (w_old, w_new) of policy fixed
    arms: list[list[float]] = field(default_factory=lambda: [[1.0, 1.0], [0.0, 0.0], [0.0, -1.0], [1.0, -1.0], [-1.0, 1.0]])
    exploration: float = 0.1  # Exp3's gamma
    validation_per_class: int = 1  # old exemplars per class withheld for the reward (0: reward on all of them)

    def __post_init__(self) -> None:
        where = "method.placebo"
        if self.kd_on not in KD_ON:
            raise ConfigError(f"{where}.kd_on must be one of {', '.join(KD_ON)}, got {self.kd_on!r}")
        if self.targets not in ("old", "seen"):
            raise ConfigError(f"{where}.targets must be old or seen, got {self.targets!r}")
        if self.policy not in ("online", "fixed"):
            raise ConfigError(f"{where}.policy must be online or fixed, got {self.policy!r}")
        if not 1 <= self.per_step <= self.candidates:
            raise ConfigError(f"{where}: need 1 ≤ per_step ({self.per_step}) ≤ candidates ({self.candidates})")
        for w in [self.fixed_weights, *self.arms]:
            if len(w) != 2:
                raise ConfigError(f"{where}: evaluation weights are pairs (w_old, w_new), got {w}")
        if not self.arms:
            raise ConfigError(f"{where}.arms: give at least one (w_old, w_new) pair")
        if not 0 < self.exploration <= 1:
            raise ConfigError(f"{where}.exploration must be in (0, 1], got {self.exploration}")
        if self.validation_per_class < 0:
            raise ConfigError(f"{where}.validation_per_class must be ≥ 0, got {self.validation_per_class}")


def evaluation_scores(features: torch.Tensor, prototypes: torch.Tensor, n_old: int, targets: range,
                      w_old: float, w_new: float) -> torch.Tensor:
    """``E(u, k)`` for every candidate row of ``features`` and target class k (columns, in ``targets`` order);
    lower is better. ``prototypes`` has one row per seen class, the old classes first."""
    d = 1 - F.normalize(features, dim=1) @ F.normalize(prototypes, dim=1).T
    score = d[:, list(targets)]
    if n_old:
        score = score + w_old * d[:, :n_old].mean(1, keepdim=True)
    if n_old < prototypes.shape[0]:
        score = score + w_new * d[:, n_old:].mean(1, keepdim=True)
    return score


def select_placebos(scores: torch.Tensor, k: int, start: int = 0) -> torch.Tensor:
    """Candidate rows chosen by turns over the target columns (from column ``start``), each turn taking the
    not yet chosen row with the lowest score in its column (ties: the lowest row); at most ``k`` rows."""
    n, classes = scores.shape
    taken = torch.zeros(n, dtype=torch.bool, device=scores.device)
    chosen: list[int] = []
    for turn in range(min(k, n)):
        column = scores[:, (start + turn) % classes].masked_fill(taken, math.inf)
        row = int(torch.argmin(column))
        chosen.append(row)
        taken[row] = True
    return torch.tensor(chosen, dtype=torch.long, device=scores.device)


def target_distances(features: torch.Tensor, prototypes: torch.Tensor, chosen: torch.Tensor, targets: range,
                     start: int = 0) -> torch.Tensor:
    """Cosine distance of each chosen candidate (``select_placebos``' order) to the prototype of the target class
    whose turn chose it: how close the placebos come to the classes they stand in for."""
    columns = [targets[(start + turn) % len(targets)] for turn in range(len(chosen))]
    picked = F.normalize(features[chosen], dim=1)
    return 1 - (picked * F.normalize(prototypes[columns], dim=1)).sum(1)


class Exp3:
    """Exp3 over ``n_arms`` with exploration ``gamma``: p = (1 − γ)·w/Σw + γ/K; after playing arm a with
    reward r ∈ [0, 1], ``w_a ← w_a · exp(γ · (r / p_a) / K)``. Weights are kept as logarithms."""

    def __init__(self, n_arms: int, gamma: float) -> None:
        self.gamma = gamma
        self.log_weights = torch.zeros(n_arms, dtype=torch.float64)

    def probabilities(self) -> torch.Tensor:
        k = len(self.log_weights)
        return (1 - self.gamma) * torch.softmax(self.log_weights, 0) + self.gamma / k

    def draw(self, generator: torch.Generator) -> int:
        return int(torch.multinomial(self.probabilities(), 1, generator=generator))

    def update(self, arm: int, reward: float) -> None:
        if not 0.0 <= reward <= 1.0:
            raise ValueError(f"Exp3 rewards lie in [0, 1], got {reward}")
        k = len(self.log_weights)
        self.log_weights[arm] += self.gamma * (reward / float(self.probabilities()[arm])) / k


def _rows(out: dict[str, Any], index: torch.Tensor | slice) -> dict[str, Any]:
    return {key: [m[index] for m in v] if isinstance(v, list) else v[index] for key, v in out.items()}


class PlaceboMixin(Learner):
    """PlaceboCIL on top of a learner that distils (put it first among the bases; see the module docstring)."""

    def __init__(self, params: Any, backbone: torch.nn.Module, device: torch.device) -> None:
        super().__init__(params, backbone, device)
        p: PlaceboParams = params.placebo
        self.placebo = p
        self.policy = Exp3(len(p.arms), p.exploration)
        self.arm = 0
        self.stream: FreeStream | None = None
        self.preprocess: Callable[..., torch.Tensor] | None = None
        self.prototypes: torch.Tensor | None = None
        self.placebo_step = 0  # steps of the current phase (seeds each step's draw of candidates)
        self.placebo_log: dict[str, Any] = {"phases": []}
        self._tracked: list[tuple[weakref.ref, int]] = []  # every tensor holding stream images, and its count

    # --- run and phase ------------------------------------------------------------------------------
    def prepare_run(self, data: Any, protocol: Protocol, preprocess: Callable[..., torch.Tensor]) -> None:
        super().prepare_run(data, protocol, preprocess)
        if self.placebo.policy == "online" and not self.uses_memory:
            raise ConfigError(f"method: the online placebo policy is rewarded on old-class exemplars, but {self.name} "
                              "keeps none (lwf: set method.use_memory=true) — or use method.placebo.policy=fixed")
        self.stream = build_free_stream(self.placebo.stream, data, protocol)
        self.preprocess = preprocess
        cfg = self.placebo.stream
        self.placebo_log["stream"] = {"source": cfg.source, "root": cfg.root, "images": len(self.stream),
                                      "classes": len(self.stream.class_names)}

    def before_phase(self, ctx: PhaseContext) -> None:
        super().before_phase(ctx)
        self.placebo_step = 0
        if self.teacher is None:
            return
        self.prototypes, exemplar_distance = self._prototypes(ctx)
        # placebo_distance (running mean over the phase) against exemplar_distance (the old exemplars' own
        # distance to their class prototype): how far the stream's best images are from the old classes
        self.placebo_log["phases"].append({"phase": ctx.phase, "steps": 0, "candidates_evaluated": 0,
                                           "placebos_used": 0, "held_after_batch_max": 0, "arms": [], "rewards": [],
                                           "exemplar_distance": exemplar_distance, "placebo_distance": 0.0})
        self.arm = self.policy.draw(ctx.generator("placebo-policy", 0))

    @torch.no_grad()
    def _prototypes(self, ctx: PhaseContext) -> tuple[torch.Tensor, float]:
        """Class means of the old model's normalised features: exemplars for old classes, all training images
        for new ones (not normalised again, as the released code); and the old exemplars' mean cosine distance
        to their own class's prototype."""
        rows, distances = [], []
        for label in range(ctx.n_seen):
            idx = ctx.memory.exemplars[label] if label < ctx.n_old else ctx.scenario.class_indices(label)
            features = self._teacher_features(ctx, idx)
            rows.append(features.mean(0))
            if label < ctx.n_old:
                distances.append(1 - features @ F.normalize(rows[-1], dim=0))
        return torch.stack(rows), float(torch.cat(distances).mean())

    def _teacher_features(self, ctx: PhaseContext, indices: np.ndarray) -> torch.Tensor:
        out = [F.normalize(self.teacher.backbone(ctx.load(indices[s : s + 256], None))[0], dim=1)
               for s in range(0, len(indices), 256)]
        return torch.cat(out)

    def validation_indices(self, ctx: PhaseContext) -> np.ndarray:
        """Old-class exemplars withheld for the policy's reward: the last ``validation_per_class`` of each old
        class's ranking, when the class keeps at least one for training."""
        v = self.placebo.validation_per_class
        if self.placebo.policy != "online" or v == 0 or ctx.phase == 0:
            return np.zeros(0, dtype=np.int64)
        held = [ex[-v:] for label, ex in sorted(ctx.memory.exemplars.items()) if label < ctx.n_old and len(ex) > v]
        return np.concatenate(held).astype(np.int64) if held else np.zeros(0, dtype=np.int64)

    def train_indices(self, ctx: PhaseContext) -> np.ndarray:
        indices = super().train_indices(ctx)
        return indices[~np.isin(indices, self.validation_indices(ctx))]

    # --- one step -----------------------------------------------------------------------------------
    def evaluation_weights(self) -> tuple[float, float]:
        w = self.placebo.fixed_weights if self.placebo.policy == "fixed" else self.placebo.arms[self.arm]
        return float(w[0]), float(w[1])

    def placebos_held(self) -> int:
        """Stream images still referenced by any tensor created for an earlier batch."""
        self._tracked = [(ref, n) for ref, n in self._tracked if ref() is not None]
        return sum(n for _, n in self._tracked)

    def _track(self, *held: tuple[torch.Tensor, int]) -> None:
        """Watch tensors that hold stream images: (tensor, how many of its rows are stream images)."""
        self._tracked += [(weakref.ref(t), n) for t, n in held]

    def _placebo_batch(self, ctx: PhaseContext) -> torch.Tensor:
        p, stream = self.placebo, self.stream
        gen = ctx.generator("placebo", self.placebo_step)
        n = min(p.candidates, len(stream))
        picks = torch.randperm(len(stream), generator=gen)[:n].numpy()
        candidates = ctx.gpu.images(self.preprocess(stream.load(picks), gen))
        with torch.no_grad():
            features = self.teacher.backbone(candidates)[0]
        targets = range(ctx.n_old) if p.targets == "old" else range(ctx.n_seen)
        scores = evaluation_scores(features, self.prototypes, ctx.n_old, targets, *self.evaluation_weights())
        start = self.placebo_step % len(targets)
        chosen = select_placebos(scores, p.per_step, start=start)
        log = self.placebo_log["phases"][-1]
        distances = target_distances(features, self.prototypes, chosen, targets, start)
        mean = log.setdefault("placebo_distance", 0.0)  # absent from checkpoints of older versions
        log["placebo_distance"] = mean + (float(distances.sum()) - len(chosen) * mean) / (log["placebos_used"] + len(chosen))
        placebos = candidates[chosen]
        self._track((candidates, len(candidates)), (placebos, len(placebos)))
        return placebos

    def loss(self, x: torch.Tensor, y: torch.Tensor, ctx: PhaseContext) -> tuple[torch.Tensor, dict[str, float]]:
        if self.teacher is None:
            return super().loss(x, y, ctx)
        log = self.placebo_log["phases"][-1]
        log["held_after_batch_max"] = max(log["held_after_batch_max"], self.placebos_held())
        placebos = self._placebo_batch(ctx)
        self.placebo_step += 1
        n = len(x)
        inputs = torch.cat([x, placebos])
        out = self.net(inputs)
        loss, logs = self.supervised_loss(_rows(out, slice(0, n)), y, ctx)
        kd_rows = torch.arange(0 if self.placebo.kd_on == "all" else n, len(inputs), device=x.device)
        if self.placebo.kd_on == "old_and_placebos":
            kd_rows = torch.cat([torch.nonzero(y < ctx.n_old).flatten(), kd_rows])
        kd_inputs = inputs[kd_rows]
        kd, kd_logs = self.distillation(_rows(out, kd_rows), kd_inputs, ctx)
        self._track((inputs, len(placebos)), (kd_inputs, len(placebos)))
        log["steps"] += 1
        log["candidates_evaluated"] += min(self.placebo.candidates, len(self.stream))
        log["placebos_used"] += len(placebos)
        return loss + kd, {**logs, **kd_logs}

    # --- the policy ---------------------------------------------------------------------------------
    @torch.no_grad()
    def validation_reward(self, ctx: PhaseContext) -> float:
        """Accuracy (0-1, over every seen class) on the old-class validation exemplars."""
        idx = self.validation_indices(ctx)
        if len(idx) == 0:
            idx = ctx.memory.indices(range(ctx.n_old))
        was_training = self.net.training
        self.net.eval()
        try:
            correct = 0
            for s in range(0, len(idx), 256):
                batch = idx[s : s + 256]
                pred = self.net(ctx.load(batch, None))["logits"].argmax(1)
                correct += int((pred == ctx.targets(batch)).sum())
        finally:
            self.net.train(was_training)
        return correct / len(idx)

    def end_epoch(self, ctx: PhaseContext, epoch: int, lr_scale: float) -> None:
        super().end_epoch(ctx, epoch, lr_scale)
        if self.teacher is None:
            return
        log = self.placebo_log["phases"][-1]
        log["held_after_batch_max"] = max(log["held_after_batch_max"], self.placebos_held())
        if self.placebo.policy != "online":
            return
        reward = self.validation_reward(ctx)
        log["arms"].append(self.arm)
        log["rewards"].append(reward)
        self.policy.update(self.arm, reward)
        log["probabilities"] = [round(float(v), 6) for v in self.policy.probabilities()]
        self.arm = self.policy.draw(ctx.generator("placebo-policy", epoch + 1))

    def report(self) -> dict[str, Any]:
        return {**super().report(), "placebo": self.placebo_log}

    # --- state ----------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["placebo"] = {"log_weights": self.policy.log_weights.clone(), "arm": self.arm,
                            "prototypes": self.prototypes, "step": self.placebo_step, "log": self.placebo_log}
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        p = state["placebo"]
        self.policy.log_weights = p["log_weights"].cpu().to(torch.float64)
        self.arm, self.prototypes, self.placebo_step = p["arm"], p["prototypes"], p["step"]
        self.placebo_log = {**p["log"], "stream": self.placebo_log.get("stream")}


def with_placebo(base: type[Learner]) -> type[Learner]:
    """``base`` with PlaceboCIL: a class named ``<base.name>_placebo`` whose parameters are the base's plus
    ``placebo:`` (:class:`PlaceboParams`)."""
    params = dataclasses.make_dataclass(f"{base.Params.__name__}Placebo",
                                        [("placebo", PlaceboParams, field(default_factory=PlaceboParams))],
                                        bases=(base.Params,))
    return type(f"{base.__name__}Placebo", (PlaceboMixin, base), {"name": f"{base.name}_placebo", "Params": params,
                                                                    "__doc__": f"{base.__name__} + PlaceboCIL."})
