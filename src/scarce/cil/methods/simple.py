"""Reference points: finetuning (lower bound) and joint training (upper bound), and LwF."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from scarce.cil.methods.base import Learner, PhaseContext, kd_loss
from scarce.errors import ConfigError


class Finetune(Learner):
    """Cross-entropy on the new classes' data only: no memory, no distillation (the lower bound)."""

    name = "finetune"
    uses_memory = False

    def supervised_loss(self, out, y, ctx):
        ce = F.cross_entropy(out["logits"], y)
        return ce, {"ce": ce.item()}


class Joint(Learner):
    """Cross-entropy on all data of every class seen so far (the upper bound); the network is carried over
    from the previous phase rather than retrained from scratch."""

    name = "joint"
    uses_memory = False

    def train_indices(self, ctx: PhaseContext) -> np.ndarray:
        return ctx.scenario.seen_train_indices(ctx.phase)

    def supervised_loss(self, out, y, ctx):
        ce = F.cross_entropy(out["logits"], y)
        return ce, {"ce": ce.item()}


@dataclass
class LwFParams:
    lamb: float = 1.0  # weight of the distillation term (Li & Hoiem: lambda_o = 1)
    T: float = 2.0  # distillation temperature (Li & Hoiem: 2)
    ce: str = "local"  # local: CE over the new classes' outputs only (the paper's new-task head); global: over all seen
    use_memory: bool = False  # the original LwF keeps no exemplars

    def __post_init__(self) -> None:
        if self.ce not in ("local", "global"):
            raise ConfigError(f"method.ce must be local or global, got {self.ce!r}")


class LwF(Learner):
    """Learning without Forgetting (Li & Hoiem 2016) with one growing head: cross-entropy of the new data on
    the new classes' outputs (``ce: local``, as the paper trains the new task's own output layer; ``global``
    spreads it over every seen class, as Avalanche does) plus ``lamb * KL`` between the old model's and the
    current model's temperature-softened outputs on the old classes. Prediction is over all seen classes."""

    name = "lwf"
    Params = LwFParams
    needs_teacher = True

    @property
    def uses_memory(self) -> bool:  # type: ignore[override]
        return self.params.use_memory

    @property
    def has_nme(self) -> bool:  # type: ignore[override]
        return self.params.use_memory

    def supervised_loss(self, out, y, ctx):
        logits = out["logits"]
        if self.teacher is None or self.params.ce == "global" or self.params.use_memory:
            ce = F.cross_entropy(logits, y)
        else:
            ce = F.cross_entropy(logits[:, ctx.n_old :], y - ctx.n_old)
        return ce, {"ce": ce.item()}

    def distillation(self, out, x, ctx):
        with torch.no_grad():
            old = self.teacher(x)["logits"]
        kd = kd_loss(out["logits"][:, : ctx.n_old], old, self.params.T, t_squared=False)  # Li & Hoiem: no T²
        return self.params.lamb * kd, {"kd": kd.item()}
