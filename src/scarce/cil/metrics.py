"""Class-incremental metrics, all derived from the stored accuracy matrix.

``A[p][t]`` is the top-1 accuracy (percent) after training phase ``p`` on the test images of the classes
introduced in phase ``t`` (t ≤ p), predicting among *all* classes seen so far (task-agnostic). With ``n_t``
test images in task ``t``, the accuracy over all seen classes after phase p is the weighted mean
``sum_t n_t A[p][t] / sum_t n_t``; old-class accuracy uses t < p, new-class accuracy t = p.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from scarce.errors import DataError

DEFINITIONS = {
    "average_incremental_accuracy": "mean over phases p = 0..N (base phase included) of the accuracy on all classes seen after phase p",
    "last_accuracy": "accuracy on all classes after the last phase N",
    "forgetting_max": (
        "Chaudhry et al. 2018: mean over old tasks t < N of max_{p in t..N-1} A[p][t] - A[N][t] "
        "(PyCIL, FACIL, Avalanche, Continuum)"
    ),
    "forgetting_initial": "mean over old tasks t < N of A[t][t] - A[N][t] (accuracy when learnt minus final; = -BWT)",
    "forgetting_base": "A[0][0] - A[N][0]: forgetting rate on the base-phase classes (Mnemonics, AANets)",
    "old_accuracy": "per phase: accuracy on the classes of earlier phases (null in the base phase)",
    "new_accuracy": "per phase: accuracy on the classes introduced in that phase",
}


@dataclass
class AccuracyMatrix:
    per_task: list[list[float]]
    task_sizes: list[int]

    def __post_init__(self) -> None:
        n = len(self.task_sizes)
        if not 0 < len(self.per_task) <= n:
            raise ValueError(f"accuracy matrix has {len(self.per_task)} rows for {n} tasks")
        for p, row in enumerate(self.per_task):
            if len(row) != p + 1:
                raise ValueError(f"row {p} of the accuracy matrix must hold {p + 1} values (tasks 0..{p}), got {len(row)}")
        if any(s <= 0 for s in self.task_sizes):
            raise ValueError(f"every task needs test images, got sizes {self.task_sizes}")

    @property
    def n_phases_done(self) -> int:
        return len(self.per_task)

    def _weighted(self, p: int, tasks: range) -> float | None:
        w = [self.task_sizes[t] for t in tasks]
        if not w:
            return None
        return sum(self.per_task[p][t] * self.task_sizes[t] for t in tasks) / sum(w)

    def seen_accuracy(self, p: int) -> float:
        return self._weighted(p, range(p + 1))  # type: ignore[return-value]

    def old_accuracy(self, p: int) -> float | None:
        return self._weighted(p, range(p))

    def new_accuracy(self, p: int) -> float:
        return self.per_task[p][p]

    def to_dict(self) -> dict[str, Any]:
        return {"per_task": self.per_task, "task_sizes": self.task_sizes}

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "accuracy matrix") -> "AccuracyMatrix":
        try:
            return cls([list(map(float, r)) for r in data["per_task"]], [int(s) for s in data["task_sizes"]])
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(where, f"not a valid accuracy matrix ({exc})") from None


def average_incremental_accuracy(m: AccuracyMatrix) -> float:
    return sum(m.seen_accuracy(p) for p in range(m.n_phases_done)) / m.n_phases_done


def last_accuracy(m: AccuracyMatrix) -> float:
    return m.seen_accuracy(m.n_phases_done - 1)


def forgetting_max(m: AccuracyMatrix, phase: int | None = None) -> float | None:
    """Chaudhry et al.: mean over t < p of (max over p' in [t, p-1] of A[p'][t]) - A[p][t]."""
    p = m.n_phases_done - 1 if phase is None else phase
    if p < 1:
        return None
    a = m.per_task
    return sum(max(a[q][t] for q in range(t, p)) - a[p][t] for t in range(p)) / p


def forgetting_initial(m: AccuracyMatrix, phase: int | None = None) -> float | None:
    """Mean over t < p of A[t][t] - A[p][t]."""
    p = m.n_phases_done - 1 if phase is None else phase
    if p < 1:
        return None
    a = m.per_task
    return sum(a[t][t] - a[p][t] for t in range(p)) / p


def forgetting_base(m: AccuracyMatrix) -> float | None:
    p = m.n_phases_done - 1
    return None if p < 1 else m.per_task[0][0] - m.per_task[p][0]


def compute_metrics(m: AccuracyMatrix) -> dict[str, Any]:
    """Every metric of :data:`DEFINITIONS` (percent), plus per-phase curves."""
    phases = range(m.n_phases_done)
    return {
        "average_incremental_accuracy": average_incremental_accuracy(m),
        "last_accuracy": last_accuracy(m),
        "forgetting_max": forgetting_max(m),
        "forgetting_initial": forgetting_initial(m),
        "forgetting_base": forgetting_base(m),
        "seen_accuracy": [m.seen_accuracy(p) for p in phases],
        "old_accuracy": [m.old_accuracy(p) for p in phases],
        "new_accuracy": [m.new_accuracy(p) for p in phases],
        "forgetting_max_per_phase": [forgetting_max(m, p) for p in phases],
        "forgetting_initial_per_phase": [forgetting_initial(m, p) for p in phases],
    }
