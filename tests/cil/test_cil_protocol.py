import numpy as np
import pytest

from scarce.cil import MemorySpec, Protocol, Scenario, resolve_class_order
from scarce.errors import ConfigError

NAMES = ("tshirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle_boot")


def test_seed1993_order_is_the_common_cifar100_order():
    order = resolve_class_order("seed1993", 100)
    assert order[:8] == (68, 56, 78, 8, 23, 84, 90, 65)
    assert sorted(order) == list(range(100))
    assert resolve_class_order("seed:1993", 100) == order == resolve_class_order(1993, 100)


def test_explicit_orders_by_id_and_name():
    assert resolve_class_order(None, 4) == (0, 1, 2, 3)
    assert resolve_class_order(["coat", 0, "bag"], 10, NAMES) == (4, 0, 8)


@pytest.mark.parametrize("order, bad", [([0, 1, 12], "12"), (["coat", "hat"], "hat"), ([0, -1], "-1")])
def test_class_order_with_unknown_classes_is_a_clear_error(order, bad):
    with pytest.raises(ConfigError, match=rf"unknown classes \[.*{bad}.*\]"):
        resolve_class_order(order, 10, NAMES)


def test_repeated_class_and_unknown_name_rejected():
    with pytest.raises(ConfigError, match="repeats"):
        resolve_class_order([1, 2, 1], 10)
    with pytest.raises(ConfigError, match="unknown order name"):
        resolve_class_order("seed1992", 10)


def test_protocol_phases_and_offsets():
    p = Protocol.build(10, class_order="seed1993", n_base=4, n_phases=3, memory={"mode": "per_class", "size": 20})
    assert p.increments == (2, 2, 2) and p.n_tasks == 4 and p.offsets == (0, 4, 6, 8, 10)
    assert p.task_classes(1) == p.class_order[4:6]
    assert Protocol.build(100, n_base=50, increment=10, n_phases=5).increments == (10,) * 5
    with pytest.raises(ConfigError, match="do not split"):
        Protocol.build(10, n_base=4, n_phases=4)
    with pytest.raises(ConfigError, match="gives 3 phases"):
        Protocol.build(10, n_base=4, increment=2, n_phases=2)


def test_memory_budget_smaller_than_number_of_classes_is_a_clear_error():
    with pytest.raises(ConfigError, match="total budget of 9 exemplars is smaller than the 10 classes"):
        Protocol.build(10, n_base=4, n_phases=3, memory={"mode": "total", "size": 9})
    Protocol.build(10, n_base=4, n_phases=3, memory={"mode": "total", "size": 10})


@pytest.mark.parametrize("value", [True, False, 20, "fixed"])
def test_memory_must_be_a_mode_and_size_never_a_boolean(value):
    with pytest.raises(ConfigError, match="memory must be a mapping"):
        MemorySpec.parse(value)


def test_memory_spec_validation_and_quota():
    with pytest.raises(ConfigError, match="memory.mode"):
        MemorySpec("fixed", 20)
    with pytest.raises(ConfigError, match="positive integer"):
        MemorySpec("per_class", 0)
    with pytest.raises(ConfigError, match="unknown key"):
        MemorySpec.parse({"mode": "total", "size": 20, "fixed_memory": True})
    assert MemorySpec("per_class", 20).quota(7) == 20 and MemorySpec("per_class", 20).budget(7) == 140
    assert MemorySpec("total", 2000).quota(60) == 33 and MemorySpec("total", 2000).budget(60) == 2000


def test_scenario_index_sets_and_relabelling():
    p = Protocol.build(4, class_order=[2, 0, 3, 1], n_base=2, n_phases=2)
    train = np.array([0, 1, 2, 3, 0, 1, 2, 3, 3])
    test = np.array([3, 2, 1, 0])
    s = Scenario(p, train, test)
    assert list(s.train_targets) == [1, 3, 0, 2, 1, 3, 0, 2, 2]
    assert sorted(s.train_indices(0)) == [0, 2, 4, 6]
    assert sorted(s.train_indices(1)) == [3, 7, 8]
    assert sorted(s.seen_train_indices(1)) == [0, 2, 3, 4, 6, 7, 8]
    assert list(s.test_indices(0)) == [1, 3] and list(s.test_task(s.test_indices(2))) == [1, 0, 2, 0]
    assert s.task_sizes() == [2, 1, 1]


def test_scenario_rejects_classes_without_images():
    p = Protocol.build(4, n_base=2, n_phases=2)
    with pytest.raises(ConfigError, match=r"test set has no images of classes \[3\]"):
        Scenario(p, np.array([0, 1, 2, 3]), np.array([0, 1, 2]))
