"""AANets (Liu, Schiele & Sun, CVPR 2021): adaptive aggregation of a stable and a plastic block at every
residual level, plugged into LUCIR (``lucir_aanets``) and PODNet (``podnet_aanets``).

The base phase trains the plain backbone. At the first incremental phase the backbone becomes two branches
built from it, as the AANets code's ``--branch_1 ss --branch_2 free`` (its CIFAR commands for LUCIR+AANets):

- the **stable** branch: every convolution kernel frozen at its base-phase value and multiplied by a
  learnable scale per (output, input) channel pair, initialised to 1 (the code's ``Conv2dMtl``: a
  ``mtl_weight`` of shape out×in×1×1; its convolutions have no bias, so nothing is shifted); its batch norm
  stays learnable, as in the code (only the kernels are frozen);
- the **plastic** branch: a fully learnable copy.

Level k's output is ``a_k · stable_k(x) + (1 − a_k) · plastic_k(x)``, where x is the previous level's
aggregated output: one scalar per level, initialised to 0.5, used as is (no activation, no constraint) — the
code's ``fusion_vars`` in ``process_inputs_fp``. A level is the stem plus the first stage for the first
level, then one stage (ResNet-32: 3 levels, ResNet-18: 4; the ConvNet: one conv block each). Both branches
start from the same weights and ``a = 0.5``, so the network at the start of phase 1 computes exactly what the
base model computed.

Training alternates per epoch, as the code does: one epoch of the base learner's losses on all data
(new data plus exemplars) updates everything but the aggregation weights; then one pass over the
class-balanced set with the network in eval mode updates the aggregation weights only, with the
classification loss (LUCIR: cross-entropy, the code's choice; PODNet: its NCA loss), under the run's
``train.amp`` like the model's steps. The balanced set is drawn once per phase, as the code's
``gen_balanced_loader``: quota × n_new new-class images drawn at random with replacement (quota = exemplars
per class of the memory) plus the old-class exemplars, augmented like the training data, not shuffled. The
aggregation weights have their own SGD (momentum 0.9, the run's weight decay, a fresh optimiser each phase)
whose learning rate follows the model's schedule.

Departures, stated:

- **Aggregation gradient.** The code never zeroes the gradient of its aggregation weights: every backward pass
  of the run (the model's batches on all data with the full LUCIR loss included) adds to it, and each
  balanced-set step applies that running sum with ``fusion_lr = 1e-8``. Here the gradient is the
  balanced-set loss's alone, reset before every step, as the paper describes. 1e-8 would then leave the
  weights at 0.5, so ``aggregation_lr`` defaults to 1e-4 (our choice, not the code's: the order of the step
  the code's running sum gives after a CIFAR phase, ~10^4 summed batch gradients times 1e-8).
- **POD-AANets.** The released POD-AANets code (``inclearn/lib/network/aanets.py``) aggregates with fixed
  0.5/0.5 weights and learns none; ``podnet_aanets`` learns them as ``lucir_aanets`` does (the paper's
  method), with PODNet's NCA loss on the balanced set. ``aggregation_lr: 0`` gives the released behaviour.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from scarce.cil.methods.base import Learner, PhaseContext
from scarce.cil.methods.lucir import LUCIR, LUCIRParams
from scarce.cil.methods.podnet import PODNet, PODNetParams
from scarce.cil.models import forward_levels


class ScaledConv2d(nn.Module):
    """A convolution whose kernel is frozen (a buffer) and multiplied by a learnable scale per (output, input)
    channel pair: AANets' stable block (the code's ``Conv2dMtl``)."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.register_buffer("weight", conv.weight.detach().clone())
        self.register_buffer("bias", None if conv.bias is None else conv.bias.detach().clone())
        self.scale = nn.Parameter(torch.ones(conv.weight.shape[0], conv.weight.shape[1], 1, 1, device=conv.weight.device))
        self.stride, self.padding, self.dilation, self.groups = conv.stride, conv.padding, conv.dilation, conv.groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.scale, self.bias, self.stride, self.padding, self.dilation, self.groups)


def make_stable(backbone: nn.Module) -> nn.Module:
    """A copy of ``backbone`` with every ``nn.Conv2d`` frozen and scaled (:class:`ScaledConv2d`)."""
    stable = copy.deepcopy(backbone)

    def convert(parent: nn.Module) -> None:
        for name, child in parent.named_children():
            if isinstance(child, nn.Conv2d):
                setattr(parent, name, ScaledConv2d(child))
            else:
                convert(child)

    convert(stable)
    return stable


class AANetsBackbone(nn.Module):
    """Stable and plastic branches of one backbone architecture, aggregated level by level; returns
    ``(features, maps)`` like every backbone, the maps being the aggregated level outputs."""

    def __init__(self, stable: nn.Module, plastic: nn.Module) -> None:
        super().__init__()
        self.stable = stable
        self.plastic = plastic
        self.out_dim = plastic.out_dim
        self.aggregation = nn.Parameter(torch.full((plastic.n_levels,), 0.5, device=next(plastic.parameters()).device))

    @classmethod
    def from_backbone(cls, backbone: nn.Module) -> "AANetsBackbone":
        return cls(make_stable(backbone), copy.deepcopy(backbone))

    @property
    def n_levels(self) -> int:
        return self.plastic.n_levels

    def forward_level(self, level: int, x: torch.Tensor) -> torch.Tensor:
        a = self.aggregation[level]
        return a * self.stable.forward_level(level, x) + (1 - a) * self.plastic.forward_level(level, x)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        return forward_levels(self, x)


@dataclass
class AANetsParams:
    aggregation_lr: float = 1e-4  # see the module docstring (the code's fusion_lr 1e-8 acts on a never-reset sum)


class AANetsMixin(Learner):
    """AANets on top of a learner (put it first among the bases): converts the backbone at the first
    incremental phase, keeps the aggregation weights out of the model's optimiser and trains them after
    every epoch on the class-balanced set."""

    aggregation_optimizer: torch.optim.Optimizer | None = None

    @property
    def aanets(self) -> AANetsBackbone | None:
        backbone = self.net.backbone
        return backbone if isinstance(backbone, AANetsBackbone) else None

    def _convert(self) -> AANetsBackbone:
        self.net.backbone = AANetsBackbone.from_backbone(self.net.backbone)
        return self.net.backbone

    def _new_aggregation_optimizer(self, weight_decay: float) -> None:
        self.aggregation_optimizer = torch.optim.SGD([self.aanets.aggregation], lr=self.params.aggregation_lr,
                                                     momentum=0.9, weight_decay=weight_decay)

    def before_phase(self, ctx: PhaseContext) -> None:
        # Converted before the teacher snapshot and the imprinting: the converted network computes what the
        # base model computes, and the teacher then has the same structure for every later phase.
        if ctx.phase > 0 and self.aanets is None:
            self._convert()
        super().before_phase(ctx)
        if ctx.phase > 0:
            self._new_aggregation_optimizer(ctx.weight_decay)

    def trainable_parameters(self, ctx: PhaseContext) -> Iterable[nn.Parameter]:
        aanets = self.aanets
        skip = None if aanets is None else aanets.aggregation
        return [p for p in super().trainable_parameters(ctx) if p is not skip]

    def balanced_indices(self, ctx: PhaseContext) -> np.ndarray:
        """The phase's class-balanced set: the old-class exemplars (the memory before its update, every class
        cut to the smallest one's count k: under RMM old classes hold more than the protocol's quota) plus
        k × n_new random new-class images (with replacement)."""
        old = ctx.memory.balanced_indices()
        k = len(old) // max(len(ctx.memory.exemplars), 1) if len(old) else ctx.memory.spec.quota(ctx.n_seen)
        new = ctx.scenario.train_indices(ctx.phase)
        picks = torch.randint(len(new), (k * ctx.n_new,), generator=ctx.generator("aanets-balanced")).numpy()
        return np.concatenate([new[picks], old])

    def aggregation_loss(self, out: dict[str, Any], y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(out["logits"], y)

    def end_epoch(self, ctx: PhaseContext, epoch: int, lr_scale: float) -> None:
        super().end_epoch(ctx, epoch, lr_scale)
        aanets, opt = self.aanets, self.aggregation_optimizer
        if ctx.phase == 0 or aanets is None or opt is None:
            return
        for group in opt.param_groups:
            group["lr"] = self.params.aggregation_lr * lr_scale
        idx = self.balanced_indices(ctx)
        labels = ctx.targets(idx)
        was_training = self.net.training
        self.net.eval()
        try:
            for start in range(0, len(idx), ctx.batch_size):
                x = ctx.load(idx[start : start + ctx.batch_size], ctx.generator("aanets-balanced", epoch, start))
                with ctx.gpu.autocast():
                    loss = self.aggregation_loss(self.net(x), labels[start : start + ctx.batch_size])
                (grad,) = torch.autograd.grad(ctx.gpu.scale(loss), [aanets.aggregation])
                aanets.aggregation.grad = grad
                ctx.gpu.step(opt)  # fp16: unscales the gradient, skips the step if it overflowed
                aanets.aggregation.grad = None
        finally:
            self.net.train(was_training)

    def after_phase(self, ctx: PhaseContext) -> None:
        super().after_phase(ctx)
        if self.aanets is not None:  # each incremental phase's a_k (stable share per level) at its end
            self.log_phase("aanets", "aggregation",
                           {"phase": ctx.phase, "weights": self.aanets.aggregation.detach().tolist()})

    # --- state: the converted structure and the aggregation optimiser's momentum -----------------------
    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["aanets"] = self.aanets is not None
        opt = self.aggregation_optimizer
        state["aggregation_optimizer"] = None if opt is None else opt.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["aanets"] and self.aanets is None:
            self._convert()
        super().load_state_dict(state)
        self.aggregation_optimizer = None
        if state["aggregation_optimizer"] is not None:
            self._new_aggregation_optimizer(0.0)  # the saved state restores the weight decay and momentum
            self.aggregation_optimizer.load_state_dict(state["aggregation_optimizer"])


@dataclass
class LUCIRAANetsParams(LUCIRParams, AANetsParams):
    pass


@dataclass
class PODNetAANetsParams(PODNetParams, AANetsParams):
    pass


class LUCIRAANets(AANetsMixin, LUCIR):
    name = "lucir_aanets"
    Params = LUCIRAANetsParams


class PODNetAANets(AANetsMixin, PODNet):
    name = "podnet_aanets"
    Params = PODNetAANetsParams

    def aggregation_loss(self, out: dict[str, Any], y: torch.Tensor) -> torch.Tensor:
        return self._nca(out["features"], y)
