import math

import numpy as np
import pytest
import torch

from scarce.cil import Memory, MemoryBudgetExceeded, MemorySpec, herding_selection
from scarce.cil.memory import random_selection


def brute_force_herding(rows: list[list[float]], m: int) -> list[int]:
    """iCaRL's herding written literally: normalise, then at step k try every unused row."""
    norm = [[v / math.sqrt(sum(x * x for x in r)) for v in r] for r in rows]
    d = len(norm[0])
    mu = [sum(r[j] for r in norm) / len(norm) for j in range(d)]
    chosen: list[int] = []
    for k in range(1, m + 1):
        best, best_dist = None, None
        for i, r in enumerate(norm):
            if i in chosen:
                continue
            mean = [(sum(norm[c][j] for c in chosen) + r[j]) / k for j in range(d)]
            dist = sum((mu[j] - mean[j]) ** 2 for j in range(d))
            if best_dist is None or dist < best_dist - 1e-12:
                best, best_dist = i, dist
        chosen.append(best)
    return chosen


@pytest.mark.parametrize("seed", range(5))
def test_herding_equals_brute_force(seed):
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(14, 5, generator=g, dtype=torch.float64) + 0.3
    m = 8
    assert herding_selection(feats, m).tolist() == brute_force_herding(feats.tolist(), m)


def test_herding_caps_at_class_size_and_never_repeats():
    feats = torch.randn(4, 3, generator=torch.Generator().manual_seed(1))
    out = herding_selection(feats, 10).tolist()
    assert sorted(out) == [0, 1, 2, 3]


def _update(mem, n_seen, new, pools, feats=None, seed=0):
    mem.update(n_seen, new, lambda c: pools[c], feats, torch.Generator().manual_seed(seed))


def test_per_class_memory_accounting():
    pools = {c: np.arange(100 * c, 100 * c + 50) for c in range(10)}
    feats = lambda idx: torch.as_tensor(np.stack([np.sin(idx), np.cos(idx * 0.7), idx % 7]), dtype=torch.float32).T
    mem = Memory(MemorySpec("per_class", 20))
    _update(mem, 4, range(4), pools, feats)
    assert mem.counts() == {c: 20 for c in range(4)} and len(mem) == 80
    first = mem.exemplars[0].copy()
    _update(mem, 6, range(4, 6), pools, feats)
    assert len(mem) == 120 and all(v == 20 for v in mem.counts().values())
    assert (mem.exemplars[0] == first).all()  # per-class budget: old classes untouched
    assert set(mem.exemplars[5]) <= set(pools[5])
    assert len(mem.indices(range(4, 6))) == 40


def test_total_memory_accounting_shrinks_by_keeping_the_ranking_head():
    pools = {c: np.arange(100 * c, 100 * c + 60) for c in range(10)}
    feats = lambda idx: torch.as_tensor(np.stack([np.sin(idx), np.cos(idx), np.sin(idx * 0.3)]), dtype=torch.float32).T
    mem = Memory(MemorySpec("total", 100))
    _update(mem, 4, range(4), pools, feats)
    assert mem.counts() == {c: 25 for c in range(4)}
    ranking = mem.exemplars[2].copy()
    _update(mem, 6, range(4, 6), pools, feats)
    assert mem.counts() == {c: 16 for c in range(6)} and len(mem) == 96 <= 100
    assert (mem.exemplars[2] == ranking[:16]).all()
    _update(mem, 10, range(6, 10), pools, feats)
    assert len(mem) == 100 and max(mem.counts().values()) == 10


def test_budget_violation_is_detected():
    mem = Memory(MemorySpec("total", 10))
    mem.n_seen = 2
    mem.exemplars = {0: np.arange(5), 1: np.arange(6)}
    with pytest.raises(MemoryBudgetExceeded, match="holds 11 exemplars"):
        mem.assert_within_budget()


def test_random_selection_is_seeded_and_state_round_trips():
    pools = {c: np.arange(10 * c, 10 * c + 10) for c in range(3)}
    a, b = Memory(MemorySpec("per_class", 4, "random")), Memory(MemorySpec("per_class", 4, "random"))
    _update(a, 3, range(3), pools, seed=7)
    _update(b, 3, range(3), pools, seed=7)
    assert all((a.exemplars[c] == b.exemplars[c]).all() for c in range(3))
    c = Memory(MemorySpec("per_class", 4, "random"))
    c.load_state_dict(a.state_dict())
    assert c.counts() == a.counts() and (c.indices() == a.indices()).all()
    assert len(random_selection(3, 5, torch.Generator().manual_seed(0))) == 3


def test_balanced_indices_cut_every_class_to_the_smallest_one():
    memory = Memory(MemorySpec(mode="per_class", size=5))
    memory.exemplars = {2: np.array([40, 41, 42, 43]), 0: np.array([7, 3, 9]), 1: np.array([20, 21])}
    # by hand: the smallest class holds 2, so each class keeps the head of its ranking, in label order
    assert memory.balanced_indices().tolist() == [7, 3, 20, 21, 40, 41]
    assert sorted(memory.indices().tolist()) == [3, 7, 9, 20, 21, 40, 41, 42, 43]  # indices() keeps everything
    assert Memory(MemorySpec(mode="per_class", size=5)).balanced_indices().tolist() == []
