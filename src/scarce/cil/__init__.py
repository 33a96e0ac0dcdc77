"""Class-incremental learning: protocol → scenario → learner (finetune, joint, LwF, iCaRL, LUCIR, PODNet,
LUCIR-AANets, POD-AANets, Mnemonics) → one trainer with checkpoints and resume → accuracy matrix → metrics and reports.

Quick start::

    from scarce.cil import load_config, run
    result = run(load_config("configs/cil/fmnist_icarl.yaml"), "runs/cil/icarl")
    result.metrics["heads"]["nme"]["average_incremental_accuracy"]
"""

from scarce.cil.compare import compare
from scarce.cil.config import CILConfig, load_config
from scarce.cil.data import CILData, Preprocess, load_cifar100, load_fashion_mnist_cil, load_imagenet_subset
from scarce.cil.memory import Memory, MemoryBudgetExceeded, herding_selection, random_selection
from scarce.cil.methods import METHODS, Learner, PhaseContext, build_learner
from scarce.cil.metrics import (
    AccuracyMatrix,
    average_incremental_accuracy,
    compute_metrics,
    forgetting_base,
    forgetting_initial,
    forgetting_max,
    last_accuracy,
)
from scarce.cil.protocol import MemorySpec, Protocol, Scenario, resolve_class_order
from scarce.cil.trainer import RunResult, Trainer, run

__all__ = [
    "AccuracyMatrix", "CILConfig", "CILData", "Learner", "METHODS", "Memory", "MemoryBudgetExceeded", "MemorySpec",
    "PhaseContext", "Preprocess", "Protocol", "RunResult", "Scenario", "Trainer", "average_incremental_accuracy",
    "build_learner", "compare", "compute_metrics", "forgetting_base", "forgetting_initial", "forgetting_max",
    "herding_selection", "last_accuracy", "load_cifar100", "load_config", "load_fashion_mnist_cil",
    "load_imagenet_subset", "random_selection", "resolve_class_order", "run",
]
