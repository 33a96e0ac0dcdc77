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
    amp: str = "none"  # none | bf16 | fp16: autocast of the training steps' forward and loss, and of evaluation
    channels_last: bool = False  # NHWC memory format of the network and image batches (faster convolutions on GPUs)
    pin_memory: bool = False  # page-locked host batches, copied without blocking (CUDA only)
    threads: int | None = None  # torch CPU threads during the run (None: torch's default); 1 is fastest on a busy machine


@dataclass
class RMMConfig:
    """RMM's learned memory policy (:mod:`scarce.cil.rmm`); defaults: the paper where it states a value, else the
    released code (``rmm_train.py``: 200 episodes, hidden width 32)."""

    old_rates: list[float] = field(default_factory=lambda: [round(0.1 * k, 1) for k in range(10)])  # Level-1 actions
    class_factors: list[float] = field(default_factory=lambda: [0.5, 1.0, 1.5])  # Level-2 actions (weight per new class)
    episodes: int = 200  # pseudo CIL tasks the policy is trained on (one REINFORCE update each)
    pseudo_base: float = 0.5  # share of the base classes that forms the pseudo-base phase
    pseudo_phases: int | None = None  # pseudo-incremental phases (default: the protocol's N, at most one class each)
    val_fraction: float = 0.2  # share of each base class's training images held out for the reward
    pseudo_epochs: int | None = None  # epochs per pseudo phase (default: train.epochs / train.base_epochs)
    pseudo_train_per_class: int | None = None  # cap on the pseudo-training images per class (default: all)
    hidden: int = 32  # width of the policy's hidden layers
    lr: float = 1e-3  # Adam learning rate of the policy
    baseline_momentum: float = 0.9  # moving-average reward baseline: b <- momentum * b + (1 - momentum) * R
    policy: str | None = None  # a trained policy file (RUN/rmm_policy.pt) to apply instead of training one


@dataclass
class CILConfig:
    seed: int = 1993
    data: DataConfig = field(default_factory=DataConfig)
    protocol: ProtocolConfig = field(default_factory=ProtocolConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    method: dict = field(default_factory=lambda: {"name": "icarl"})
    rmm: RMMConfig | None = None  # RMM's memory policy; null: the protocol's fixed exemplar memory

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
