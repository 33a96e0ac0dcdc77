"""Exemplar memory: herding (iCaRL) or random selection under a per-class or total budget.

The memory stores *indices* into the training set, one ranked list per class; shrinking a class keeps the
head of its ranking (for herding, the best approximation of the class mean with that many exemplars).
A method that learns its exemplars (Mnemonics) also stores one image tensor per exemplar (``set_images``):
loading an exemplar's training index then yields its learned image (``substitute``), so every consumer of the
memory (training batches, class means) sees the learned images; the index stays as the image's origin.
:meth:`Memory.assert_within_budget` is called by the trainer after every update.
A memory policy (RMM, :mod:`scarce.cil.rmm`) replaces the protocol's quotas for a phase with its own
:class:`MemoryLimits` (a total and one quota per class), which updates and the budget check then obey.
"""

from __future__ import annotations

from dataclasses import dataclass
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


@dataclass(frozen=True)
class MemoryLimits:
    """A phase's memory set by a memory policy: at most ``budget`` images in all, ``quotas[label]`` per class."""

    budget: int
    quotas: dict[int, int]

    def to_dict(self) -> dict:
        return {"budget": self.budget, "quotas": {int(c): int(q) for c, q in self.quotas.items()}}


class Memory:
    """Exemplars per incremental label under a :class:`MemorySpec` (or a policy's :class:`MemoryLimits`)."""

    def __init__(self, spec: MemorySpec) -> None:
        self.spec = spec
        self.limits: MemoryLimits | None = None
        self.exemplars: dict[int, np.ndarray] = {}
        self.images: dict[int, torch.Tensor] = {}  # learned images (float, pixel scale 0-255), rows = exemplars
        self.n_seen = 0
        self._image_rows: dict[int, tuple[int, int]] | None = None  # training index -> (label, row)

    def __len__(self) -> int:
        return int(sum(len(v) for v in self.exemplars.values()))

    def indices(self, labels: range | list[int] | None = None) -> np.ndarray:
        keys = sorted(self.exemplars) if labels is None else [c for c in labels if c in self.exemplars]
        if not keys:
            return np.zeros(0, dtype=np.int64)
        return np.concatenate([self.exemplars[c] for c in keys]).astype(np.int64)

    def balanced_indices(self) -> np.ndarray:
        """The same number of exemplars for every class: each class's ranking cut to the smallest class's size.

        Without a memory policy every class holds its quota, so this is :meth:`indices`; RMM leaves the classes
        unequal (the last phase's new classes keep their training data), which a class-balanced step must not see.
        """
        if not self.exemplars:
            return np.zeros(0, dtype=np.int64)
        k = min(len(v) for v in self.exemplars.values())
        return np.concatenate([self.exemplars[c][:k] for c in sorted(self.exemplars)]).astype(np.int64)

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
        self.n_seen = n_seen
        self.shrink()
        for label in new_labels:
            quota = self.quota(label)
            pool = np.asarray(candidates(label), dtype=np.int64)
            if self.spec.selection == "herding":
                if features is None:
                    raise ValueError("herding selection needs a feature function")
                order = herding_selection(features(pool), quota)
            else:
                order = random_selection(len(pool), quota, generator)
            self.exemplars[label] = pool[order.numpy()]
        self.assert_within_budget()

    def quota(self, label: int) -> int:
        """Exemplars allowed for ``label`` now: the policy's limit for the phase, else the protocol's quota."""
        if self.limits is not None:
            return self.limits.quotas.get(label, 0)
        return self.spec.quota(self.n_seen)

    def set_limits(self, limits: MemoryLimits | None) -> None:
        """Apply a memory policy's limits (``None``: back to the protocol's quotas); classes over their new quota
        keep the head of their ranking."""
        self.limits = limits
        self.shrink()

    def shrink(self) -> None:
        """Cut every class to its current quota (the head of its ranking stays)."""
        for label in list(self.exemplars):
            self.exemplars[label] = self.exemplars[label][: self.quota(label)]
        for label in list(self.images):
            self.images[label] = self.images[label][: self.quota(label)]
        self._image_rows = None

    def set_images(self, label: int, images: torch.Tensor) -> None:
        """Store learned images for the exemplars of ``label``, one per exemplar in ranking order (N×C×H×W,
        pixel scale 0-255 like the dataset's uint8 images)."""
        if label not in self.exemplars or len(images) != len(self.exemplars[label]):
            have = len(self.exemplars.get(label, ()))
            raise ValueError(f"class {label}: {len(images)} images for {have} exemplars")
        self.images[label] = images.detach().to("cpu", torch.float32).clone()
        self._image_rows = None

    def substitute(self, indices: np.ndarray, images: torch.Tensor) -> torch.Tensor:
        """``images`` loaded from the training set at ``indices``, each exemplar that has a learned image
        replaced by it (a float copy then; unchanged when the memory holds no learned image among them)."""
        if not self.images:
            return images
        if self._image_rows is None:
            self._image_rows = {int(i): (c, r) for c, imgs in self.images.items()
                                for r, i in enumerate(self.exemplars[c][: len(imgs)])}
        hits = [(k, self._image_rows[int(i)]) for k, i in enumerate(indices) if int(i) in self._image_rows]
        if not hits:
            return images
        out = images.to(torch.float32, copy=True)
        for k, (label, row) in hits:
            out[k] = self.images[label][row]
        return out

    def assert_within_budget(self) -> None:
        if self.limits is not None:
            budget, rule = self.limits.budget, "set by the memory policy for this phase"
        else:
            budget, rule = self.spec.budget(self.n_seen), self.spec.describe()
        over = {c: f"{len(v)} > {self.quota(c)}" for c, v in self.exemplars.items() if len(v) > self.quota(c)}
        if len(self) > budget or over:
            raise MemoryBudgetExceeded(
                f"memory holds {len(self)} exemplars for {self.n_seen} classes; budget {budget} "
                f"({rule}), classes over their quota: {over}"
            )

    def counts(self) -> dict[int, int]:
        return {c: len(v) for c, v in sorted(self.exemplars.items())}

    def state_dict(self) -> dict:
        return {"n_seen": self.n_seen, "exemplars": {int(c): v.tolist() for c, v in self.exemplars.items()},
                "images": {int(c): v for c, v in self.images.items()},
                "limits": None if self.limits is None else self.limits.to_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.n_seen = int(state["n_seen"])
        self.exemplars = {int(c): np.asarray(v, dtype=np.int64) for c, v in state["exemplars"].items()}
        self.images = {int(c): v.cpu() for c, v in state.get("images", {}).items()}
        limits = state.get("limits")
        self.limits = None if limits is None else MemoryLimits(
            int(limits["budget"]), {int(c): int(q) for c, q in limits["quotas"].items()})
        self._image_rows = None
