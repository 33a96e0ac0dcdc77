"""The class-incremental protocol (class order, base classes, phases, memory) and its per-phase scenario.

A :class:`Protocol` is pure bookkeeping over class ids; a :class:`Scenario` applies it to the labels of a
train and a test set and hands out the index sets each phase trains and evaluates on. Internally every class
is relabelled by its position in the class order, so the classes of phase ``t`` are the contiguous labels
``offsets[t] .. offsets[t+1]-1`` (this is what every head and metric works with).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from scarce.errors import ConfigError

MEMORY_MODES = ("per_class", "total")
SELECTIONS = ("herding", "random")
#: Named class orders. "seed1993" is ``np.random.seed(1993); np.random.shuffle(np.arange(n))``: for CIFAR-100
#: it is the order used by LUCIR, AANets, Mnemonics, PyCIL and FACIL (``cifar100_icarl``).
NAMED_ORDER_SEEDS = {"seed1993": 1993}


@dataclass(frozen=True)
class MemorySpec:
    """Exemplar memory: ``mode`` is ``per_class`` (``size`` exemplars for every seen class, so the total grows)
    or ``total`` (``size`` exemplars shared by all seen classes: ``size // n_seen`` each, never more).
    ``selection`` is ``herding`` (iCaRL) or ``random``."""

    mode: str = "per_class"
    size: int = 20
    selection: str = "herding"

    def __post_init__(self) -> None:
        if self.mode not in MEMORY_MODES:
            raise ConfigError(f"memory.mode must be one of {', '.join(MEMORY_MODES)}, got {self.mode!r}")
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 1:
            raise ConfigError(f"memory.size must be a positive integer, got {self.size!r}")
        if self.selection not in SELECTIONS:
            raise ConfigError(f"memory.selection must be one of {', '.join(SELECTIONS)}, got {self.selection!r}")

    @classmethod
    def parse(cls, value: Any) -> "MemorySpec":
        if isinstance(value, MemorySpec):
            return value
        if isinstance(value, bool) or not isinstance(value, dict):
            raise ConfigError(
                f"memory must be a mapping {{mode: per_class | total, size: N}}, got {value!r} "
                "(a boolean such as fixed_memory means opposite things in different codebases)"
            )
        unknown = sorted(set(value) - {"mode", "size", "selection"})
        if unknown:
            raise ConfigError(f"memory: unknown key(s) {', '.join(unknown)}; known: mode, selection, size")
        return cls(**value)

    def quota(self, n_seen: int) -> int:
        """Exemplars allowed per class once ``n_seen`` classes have been seen."""
        if n_seen <= 0:
            return 0
        return self.size if self.mode == "per_class" else self.size // n_seen

    def budget(self, n_seen: int) -> int:
        """Total exemplars allowed once ``n_seen`` classes have been seen."""
        return self.size * n_seen if self.mode == "per_class" else self.size

    def describe(self) -> str:
        return f"{self.size} per class" if self.mode == "per_class" else f"{self.size} in total"


def resolve_class_order(spec: Any, n_classes: int, class_names: Sequence[str] | None = None) -> tuple[int, ...]:
    """Turn a class-order spec into class ids.

    ``None`` or ``"identity"``: 0..n-1. ``"seed1993"`` or ``"seed:K"``: ``RandomState(K).permutation(n)``.
    An integer K: same as ``"seed:K"``. A list of class ids or class names: that order (it may use a subset
    of the classes). Unknown or repeated classes raise :class:`ConfigError`.
    """
    if spec is None or spec == "identity":
        return tuple(range(n_classes))
    if isinstance(spec, bool):
        raise ConfigError(f"protocol.class_order: expected a name, a seed or a list, got {spec!r}")
    if isinstance(spec, int):
        return tuple(int(c) for c in np.random.RandomState(spec).permutation(n_classes))
    if isinstance(spec, str):
        if spec in NAMED_ORDER_SEEDS:
            seed = NAMED_ORDER_SEEDS[spec]
        elif spec.startswith("seed:") and spec[5:].isdigit():
            seed = int(spec[5:])
        else:
            raise ConfigError(
                f"protocol.class_order: unknown order name {spec!r}; use identity, "
                f"{', '.join(NAMED_ORDER_SEEDS)}, seed:K or an explicit list"
            )
        return tuple(int(c) for c in np.random.RandomState(seed).permutation(n_classes))
    if not isinstance(spec, (list, tuple)) or not spec:
        raise ConfigError(f"protocol.class_order: expected a name, a seed or a non-empty list, got {spec!r}")
    names = list(class_names or [])
    ids: list[int] = []
    unknown: list[Any] = []
    for item in spec:
        if isinstance(item, str) and item in names:
            ids.append(names.index(item))
        elif isinstance(item, (int, np.integer)) and not isinstance(item, bool) and 0 <= int(item) < n_classes:
            ids.append(int(item))
        else:
            unknown.append(item)
    if unknown:
        known = f"ids 0..{n_classes - 1}" + (f" or names {', '.join(names)}" if names else "")
        raise ConfigError(f"protocol.class_order names unknown classes {unknown}; known: {known}")
    repeated = sorted({c for c in ids if ids.count(c) > 1})
    if repeated:
        raise ConfigError(f"protocol.class_order repeats classes {repeated}")
    return tuple(ids)


@dataclass(frozen=True)
class Protocol:
    """Class order, ``n_base`` classes in phase 0, then one phase per entry of ``increments``."""

    class_order: tuple[int, ...]
    n_base: int
    increments: tuple[int, ...]
    memory: MemorySpec = field(default_factory=MemorySpec)
    class_names: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        n = len(self.class_order)
        if len(set(self.class_order)) != n:
            raise ConfigError("protocol.class_order repeats classes")
        if self.n_base < 1 or any(i < 1 for i in self.increments):
            raise ConfigError(f"protocol: base ({self.n_base}) and every increment {list(self.increments)} must be ≥ 1")
        if self.n_base + sum(self.increments) != n:
            raise ConfigError(
                f"protocol: {self.n_base} base classes + increments {list(self.increments)} = "
                f"{self.n_base + sum(self.increments)} classes, but the class order has {n}"
            )
        if self.memory.mode == "total" and self.memory.size < n:
            raise ConfigError(
                f"protocol.memory: a total budget of {self.memory.size} exemplars is smaller than the {n} classes "
                "of the protocol; every class needs at least one exemplar (raise memory.size or use mode per_class)"
            )

    @classmethod
    def build(
        cls,
        n_classes: int,
        *,
        class_order: Any = None,
        n_base: int,
        n_phases: int | None = None,
        increment: int | None = None,
        memory: Any = None,
        class_names: Sequence[str] | None = None,
    ) -> "Protocol":
        """Build from config-style values: the increment is derived from ``n_phases`` when not given."""
        order = resolve_class_order(class_order, n_classes, class_names)
        rest = len(order) - n_base
        if n_base < 1 or rest < 0:
            raise ConfigError(f"protocol.n_base must be between 1 and {len(order)}, got {n_base}")
        if increment is None:
            if n_phases is None:
                raise ConfigError("protocol: give n_phases or increment")
            if n_phases < 0 or (n_phases == 0 and rest) or (n_phases and rest % n_phases):
                raise ConfigError(f"protocol: {rest} classes after the base phase do not split into {n_phases} equal phases")
            increments = (rest // n_phases,) * n_phases if n_phases else ()
        else:
            if increment < 1 or rest % increment:
                raise ConfigError(f"protocol: {rest} classes after the base phase do not split into phases of {increment}")
            increments = (increment,) * (rest // increment)
            if n_phases is not None and n_phases != len(increments):
                raise ConfigError(f"protocol: increment {increment} gives {len(increments)} phases, not n_phases={n_phases}")
        names = tuple(class_names) if class_names is not None else None
        return cls(order, n_base, increments, MemorySpec.parse(memory if memory is not None else {}), names)

    # --- derived quantities -------------------------------------------------------------------------
    @property
    def n_classes(self) -> int:
        return len(self.class_order)

    @property
    def n_phases(self) -> int:
        """Incremental phases N (the base phase not counted)."""
        return len(self.increments)

    @property
    def n_tasks(self) -> int:
        """Phases including the base phase: N + 1."""
        return len(self.increments) + 1

    @property
    def offsets(self) -> tuple[int, ...]:
        """Label boundaries: task t owns labels ``offsets[t]:offsets[t+1]``."""
        out = [0, self.n_base]
        for inc in self.increments:
            out.append(out[-1] + inc)
        return tuple(out)

    def n_seen(self, phase: int) -> int:
        return self.offsets[phase + 1]

    def task_classes(self, task: int) -> tuple[int, ...]:
        """Original class ids introduced in phase ``task``."""
        o = self.offsets
        return self.class_order[o[task] : o[task + 1]]

    def label_map(self, n_original: int) -> np.ndarray:
        """Array mapping an original class id to its incremental label (-1 for classes outside the order)."""
        out = np.full(n_original, -1, dtype=np.int64)
        out[list(self.class_order)] = np.arange(self.n_classes)
        return out

    def task_of_label(self) -> np.ndarray:
        return np.repeat(np.arange(self.n_tasks), np.diff(self.offsets))

    def to_dict(self) -> dict[str, Any]:
        return {
            "class_order": list(self.class_order),
            "class_names": None if self.class_names is None else [self.class_names[c] for c in self.class_order],
            "n_base": self.n_base,
            "increments": list(self.increments),
            "memory": {"mode": self.memory.mode, "size": self.memory.size, "selection": self.memory.selection},
        }

    def describe(self) -> str:
        inc = sorted(set(self.increments))
        inc_s = "" if not inc else f", N={self.n_phases} phases of {inc[0] if len(inc) == 1 else list(self.increments)}"
        return f"B{self.n_base}{inc_s}, memory {self.memory.describe()} ({self.memory.selection})"


class Scenario:
    """A protocol applied to train/test labels: per-phase index sets and incremental labels."""

    def __init__(self, protocol: Protocol, train_labels: np.ndarray, test_labels: np.ndarray) -> None:
        self.protocol = protocol
        n_orig = int(max(np.max(train_labels, initial=0), np.max(test_labels, initial=0), max(protocol.class_order))) + 1
        lm = protocol.label_map(n_orig)
        self.train_targets = lm[np.asarray(train_labels, dtype=np.int64)]
        self.test_targets = lm[np.asarray(test_labels, dtype=np.int64)]
        self._task = protocol.task_of_label()
        for name, targets in (("train", self.train_targets), ("test", self.test_targets)):
            counts = np.bincount(targets[targets >= 0], minlength=protocol.n_classes)
            empty = [protocol.class_order[i] for i in np.flatnonzero(counts == 0)]
            if empty:
                raise ConfigError(f"the {name} set has no images of classes {empty} named by the class order")
        self._by_label = [np.flatnonzero(self.train_targets == c) for c in range(protocol.n_classes)]

    @property
    def n_tasks(self) -> int:
        return self.protocol.n_tasks

    def labels_of_task(self, task: int) -> range:
        o = self.protocol.offsets
        return range(o[task], o[task + 1])

    def class_indices(self, label: int) -> np.ndarray:
        """Train indices of incremental label ``label``."""
        return self._by_label[label]

    def restricted(self, kept: dict[int, np.ndarray]) -> "Scenario":
        """This scenario with the training images of some classes cut down to ``kept[label]`` (a memory policy's
        choice of the new-class data a phase trains on); the test split is unchanged."""
        out = copy.copy(self)
        out._by_label = [np.asarray(kept[c], dtype=np.int64) if c in kept else idx for c, idx in enumerate(self._by_label)]
        return out

    def train_indices(self, phase: int) -> np.ndarray:
        """Train indices of the classes new in ``phase``."""
        return np.concatenate([self._by_label[c] for c in self.labels_of_task(phase)])

    def seen_train_indices(self, phase: int) -> np.ndarray:
        return np.concatenate([self.train_indices(t) for t in range(phase + 1)])

    def test_indices(self, phase: int) -> np.ndarray:
        """Test indices of every class seen up to ``phase`` (sorted)."""
        t = self.test_targets
        return np.flatnonzero((t >= 0) & (t < self.protocol.n_seen(phase)))

    def test_task(self, indices: np.ndarray) -> np.ndarray:
        """Phase that introduced the class of each test index."""
        return self._task[self.test_targets[indices]]

    def task_sizes(self) -> list[int]:
        t = self.test_targets
        return [int(np.count_nonzero((t >= 0) & (self._task[np.maximum(t, 0)] == k))) for k in range(self.n_tasks)]
