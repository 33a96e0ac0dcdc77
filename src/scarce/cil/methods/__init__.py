"""Class-incremental methods, by config name."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from scarce.cil.methods.aanets import LUCIRAANets, PODNetAANets
from scarce.cil.methods.base import Learner, PhaseContext, balanced_head_finetune, kd_loss, nme_scores
from scarce.cil.methods.icarl import ICaRL
from scarce.cil.methods.lucir import LUCIR
from scarce.cil.methods.mnemonics import Mnemonics
from scarce.cil.methods.placebo import PlaceboMixin, with_placebo
from scarce.cil.methods.podnet import PODNet
from scarce.cil.methods.simple import Finetune, Joint, LwF
from scarce.config import from_dict
from scarce.errors import ConfigError

METHODS: dict[str, type[Learner]] = {m.name: m for m in (
    Finetune, Joint, LwF, ICaRL, LUCIR, PODNet, LUCIRAANets, PODNetAANets, Mnemonics)}
PLACEBO_BASES = (LwF, ICaRL, LUCIR, PODNet, LUCIRAANets, PODNetAANets)  # PlaceboCIL: "<name>_placebo"
METHODS.update({m.name: m for m in map(with_placebo, PLACEBO_BASES)})


def method_class(name: str) -> type[Learner]:
    if name not in METHODS:
        raise ConfigError(f"method.name: unknown method {name!r}; known: {', '.join(METHODS)}")
    return METHODS[name]


def build_learner(method: dict[str, Any], backbone_fn, device: torch.device) -> Learner:
    """``method`` is the config's ``method:`` mapping; ``backbone_fn(last_relu)`` builds the backbone."""
    cls = method_class(str(method.get("name")))
    params = from_dict(cls.Params, {k: v for k, v in method.items() if k != "name"}, where="method")
    backbone: nn.Module = backbone_fn(cls.last_relu)
    return cls(params, backbone, device)


__all__ = [
    "METHODS", "Learner", "PhaseContext", "build_learner", "method_class", "kd_loss", "nme_scores",
    "balanced_head_finetune", "Finetune", "Joint", "LwF", "ICaRL", "LUCIR", "PODNet", "LUCIRAANets", "PODNetAANets",
    "Mnemonics", "PlaceboMixin", "with_placebo",
]
