"""Exemplar memory: herding (iCaRL) or random selection under a per-class or total budget.

The memory stores *indices* into the training set, one ranked list per class; shrinking a class keeps the
head of its ranking (for herding, the best approximation of the class mean with that many exemplars).
:meth:`Memory.assert_within_budget` is called by the trainer after every update.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from scarce.cil.protocol import MemorySpec
from scarce.errors import ScarceError


class MemoryBudgetExceeded(ScarceError):
    """The memory holds more exemplars than its budget allows (a bug in a method, never a user error)."""


def herding_selection(features: torch.Tensor, m: int) -> torch.Tensor:
    """iCaRL herding: greedily pick ``m`` rows whose running mean best approximates the mean feature.

    Features are L2-normalised; ``mu`` is their mean. Step k picks, among rows not yet chosen, the row x
    minimising ``|| mu - (x + sum of the k-1 chosen rows) / k ||``; ties go to the lowest index. Returns the
    chosen row positions in the order they were picked.
    """
    n = features.shape[0]
    m = min(m, n)
    f = F.normalize(features.detach().to(torch.float64), dim=1)
    mu = f.mean(dim=0)
    running = torch.zeros_like(mu)
    taken = torch.zeros(n, dtype=torch.bool)
    chosen: list[int] = []
    for k in range(1, m + 1):
        dist = ((mu - (running + f) / k) ** 2).sum(dim=1)
        dist[taken] = float("inf")
        i = int(torch.argmin(dist))
        chosen.append(i)
        taken[i] = True
        running += f[i]
    return torch.tensor(chosen, dtype=torch.long)


def random_selection(n: int, m: int, generator: torch.Generator) -> torch.Tensor:
    return torch.randperm(n, generator=generator)[: min(m, n)]


class Memory:
    """Exemplars per incremental label under a :class:`MemorySpec`."""

    def __init__(self, spec: MemorySpec) -> None:
        self.spec = spec
        self.exemplars: dict[int, np.ndarray] = {}
        self.n_seen = 0

    def __len__(self) -> int:
        return int(sum(len(v) for v in self.exemplars.values()))

    def indices(self, labels: range | list[int] | None = None) -> np.ndarray:
        keys = sorted(self.exemplars) if labels is None else [c for c in labels if c in self.exemplars]
        if not keys:
            return np.zeros(0, dtype=np.int64)
        return np.concatenate([self.exemplars[c] for c in keys]).astype(np.int64)

    def update(
        self,
        n_seen: int,
        new_labels: range | list[int],
        candidates: Callable[[int], np.ndarray],
        features: Callable[[np.ndarray], torch.Tensor] | None,
        generator: torch.Generator,
    ) -> None:
        """Shrink the old classes to the new quota, then select exemplars for ``new_labels``.

        ``candidates(label)`` gives the training indices of a class; ``features(indices)`` their features
        (needed for herding only).
        """
        quota = self.spec.quota(n_seen)
        self.n_seen = n_seen
        for label in list(self.exemplars):
            self.exemplars[label] = self.exemplars[label][:quota]
        for label in new_labels:
            pool = np.asarray(candidates(label), dtype=np.int64)
            if self.spec.selection == "herding":
                if features is None:
                    raise ValueError("herding selection needs a feature function")
                order = herding_selection(features(pool), quota)
            else:
                order = random_selection(len(pool), quota, generator)
            self.exemplars[label] = pool[order.numpy()]
        self.assert_within_budget()

    def assert_within_budget(self) -> None:
        budget, quota = self.spec.budget(self.n_seen), self.spec.quota(self.n_seen)
        over = {c: len(v) for c, v in self.exemplars.items() if len(v) > quota}
        if len(self) > budget or over:
            raise MemoryBudgetExceeded(
                f"memory holds {len(self)} exemplars for {self.n_seen} classes; budget {budget} "
                f"({self.spec.describe()}), classes over their quota of {quota}: {over}"
            )

    def counts(self) -> dict[int, int]:
        return {c: len(v) for c, v in sorted(self.exemplars.items())}

    def state_dict(self) -> dict:
        return {"n_seen": self.n_seen, "exemplars": {int(c): v.tolist() for c, v in self.exemplars.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.n_seen = int(state["n_seen"])
        self.exemplars = {int(c): np.asarray(v, dtype=np.int64) for c, v in state["exemplars"].items()}
