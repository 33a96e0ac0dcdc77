"""Shared tiny protocol for the CIL tests: 6 Fashion-MNIST classes from the shipped subset, 30 training and
10 test images per class, 2 base classes then 2 phases of 2, one epoch, one thread."""

from __future__ import annotations

from scarce.cil import load_config

TINY = [
    "seed=0",
    "data.subset=true",
    "data.train_per_class=30",
    "data.test_per_class=10",
    "protocol.class_order=[0,1,2,3,4,5]",
    "protocol.n_base=2",
    "protocol.n_phases=2",
    "protocol.memory.size=5",
    "train.epochs=1",
    "train.batch_size=16",
    "train.lr=0.05",
    "train.schedule=constant",
    "train.threads=1",
    "train.checkpoint_every=3",
]


def tiny_config(method: str = "icarl", *extra: str):
    return load_config(None, TINY + [f"method.name={method}", *extra])
