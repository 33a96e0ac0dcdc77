"""Configuration of a class-incremental run (dataclass defaults ← YAML ← ``key=value`` overrides).

A YAML file may name a ``base:`` file (path relative to it) whose settings it extends, so one protocol file
can be shared by one file per method. Method hyper-parameters live under ``method:`` and are checked by the
method's own parameter dataclass (see :mod:`scarce.cil.methods`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scarce.config import from_dict, load_yaml, merge, parse_overrides
from scarce.errors import ConfigError


@dataclass
class DataConfig:
    name: str = "fashion_mnist"  # fashion_mnist | cifar100 | imagenet_subset
    root: str | None = None  # dataset folder (fashion_mnist: optional; found automatically)
    subset: bool | None = None  # fashion_mnist: true forces the 200/50-per-class subset shipped with scarce
    class_list: str | None = None  # imagenet_subset: class-list file (default ROOT/classes.txt)
    image_size: int = 224  # imagenet_subset: images are resized and centre-cropped to this size
    cache: bool = False  # imagenet_subset: keep decoded images in memory
    train_per_class: int | None = None  # keep at most this many training images per class
    test_per_class: int | None = None
    subsample_seed: int = 0  # the subsample is the same for every run seed and method
    augment: str = "auto"  # auto (dataset default) | none | flip | crop_flip


@dataclass
class MemoryConfig:
    mode: str = "per_class"  # per_class | total
    size: int = 20
    selection: str = "herding"  # herding | random


@dataclass
class ProtocolConfig:
    class_order: Any = None  # null/identity, seed1993, seed:K, or a list of class ids or names
    n_base: int = 4
    n_phases: int | None = 3
    increment: int | None = None
    memory: MemoryConfig = field(default_factory=MemoryConfig)


@dataclass
class ModelConfig:
    backbone: str = "auto"  # auto | convnet | resnet32 | resnet18 | resnet18_cifar


@dataclass
class TrainConfig:
    epochs: int = 160
    base_epochs: int | None = None  # epochs of the base phase (default: epochs)
    batch_size: int = 128
    lr: float = 0.1
    base_lr: float | None = None  # learning rate of the base phase (default: lr)
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "multistep"  # multistep | cosine | constant (stepped per epoch)
    milestones: list[float] = field(default_factory=lambda: [0.5, 0.75])  # fractions of the phase's epochs
    gamma: float = 0.1
    eval_batch_size: int = 512
    checkpoint_every: int = 200  # optimiser steps between mid-phase checkpoints
    keep_phase_checkpoints: bool = True
    device: str = "cpu"  # cpu | cuda | auto
    threads: int | None = None  # torch CPU threads during the run (None: torch's default); 1 is fastest on a busy machine


@dataclass
class CILConfig:
    seed: int = 1993
    data: DataConfig = field(default_factory=DataConfig)
    protocol: ProtocolConfig = field(default_factory=ProtocolConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    method: dict = field(default_factory=lambda: {"name": "icarl"})

    @property
    def method_name(self) -> str:
        return str(self.method.get("name", ""))


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> CILConfig:
    """Defaults ← YAML (with its ``base:`` chain) ← overrides like ``train.epochs=2``."""
    data = load_yaml(path) if path else {}
    data = merge(data, parse_overrides(overrides))
    cfg = from_dict(CILConfig, data)
    if not isinstance(cfg.method, dict) or not cfg.method.get("name"):
        raise ConfigError(f"{path or 'config'}: method must be a mapping with a 'name' (finetune, joint, lwf, icarl, lucir, podnet, lucir_aanets, podnet_aanets, mnemonics; <name>_placebo for lwf, icarl, lucir, podnet and the aanets variants)")
    return cfg
