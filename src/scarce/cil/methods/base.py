"""The learner interface: one object per method, driven by :class:`scarce.cil.trainer.Trainer`.

Lifecycle of a phase (the trainer calls these in this order):

1. ``before_phase(ctx)``: snapshot the teacher, grow the head (imprinting where the method does);
2. ``train_indices(ctx)`` and ``trainable_parameters(ctx)``: what the optimiser sees;
3. ``loss(x, y, ctx)`` for every mini-batch, and ``end_epoch(ctx, epoch, lr_scale)`` after every epoch
   (e.g. AANets' aggregation weights on the class-balanced set). ``loss`` is ``supervised_loss`` (the terms
   that need labels) plus, once there is a teacher, ``distillation`` (the label-free terms against the old
   model), so that an add-on can distil on other images than the labelled batch (PlaceboCIL);
4. ``update_memory(ctx)``: herding/random exemplars for the new classes, shrinking the old ones;
5. ``after_phase(ctx)``: e.g. class-balanced finetuning, class means for the NME classifier;
6. ``predict(x)``: scores per evaluation head (``cnn`` and, for methods with exemplars, ``nme``).

Before the first phase (and before a resumed run loads its checkpoint) the trainer calls
``prepare_run(data, protocol, preprocess)`` once, for add-ons that read data of their own; ``report()`` is
stored in ``metrics.json`` under ``method_report``.

A method's hyper-parameters are a dataclass ``Params`` (defaults from its paper), filled from the
``method:`` section of the config.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Iterable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from scarce.cil.memory import Memory
from scarce.cil.models import CosineHead, IncrementalNet, LinearHead, LSCHead, _BlockHead
from scarce.cil.protocol import Protocol, Scenario
from scarce.training.gpu_path import GPUPath


@dataclass
class PhaseContext:
    """What a learner may use during a phase."""

    phase: int
    protocol: Protocol
    scenario: Scenario
    memory: Memory
    device: torch.device
    flips: bool  # the dataset's augmentation flips images (NME means then average each image with its flip)
    load: Callable[[np.ndarray, torch.Generator | None], torch.Tensor]  # train images → normalised batch on device
    generator: Callable[..., torch.Generator]  # generator("tag", ...) seeded from (run seed, phase, tags)
    pixels: Callable[[torch.Tensor], torch.Tensor]  # normalised batch → pixel scale 0-255 (CPU), inverse of load's
    gpu: GPUPath  # the run's autocast and gradient scaler: every training step of a learner goes through it
    batch_size: int = 128
    weight_decay: float = 0.0  # the run's train.weight_decay (LUCIR's class-balanced finetuning uses it too)

    @property
    def n_seen(self) -> int:
        return self.protocol.n_seen(self.phase)

    @property
    def n_old(self) -> int:
        return self.protocol.offsets[self.phase]

    @property
    def n_new(self) -> int:
        return self.n_seen - self.n_old

    @property
    def new_labels(self) -> range:
        return range(self.n_old, self.n_seen)

    def targets(self, indices: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(self.scenario.train_targets[indices], device=self.device)


@dataclass
class NoParams:
    pass


def frozen_copy(net: nn.Module) -> nn.Module:
    teacher = copy.deepcopy(net)
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, T: float, *, t_squared: bool) -> torch.Tensor:
    """KL(softmax(teacher/T) || softmax(student/T)), summed over classes and averaged over the batch.

    ``t_squared`` multiplies it by T² (Hinton et al.), as the iCaRL baseline of the LUCIR and AANets code does
    (``KLDivLoss()(...) * T * T * beta * num_old_classes``: its element-wise mean times the number of old
    classes is this batch mean). Li & Hoiem's LwF has no T² factor. Each caller says which it follows."""
    kl = F.kl_div(F.log_softmax(student / T, dim=1), F.softmax(teacher / T, dim=1), reduction="batchmean")
    return kl * (T * T) if t_squared else kl


class Learner:
    name: ClassVar[str] = "base"
    Params: ClassVar[type] = NoParams
    head: ClassVar[str] = "linear"  # linear | cosine | lsc
    last_relu: ClassVar[bool] = True
    uses_memory: ClassVar[bool] = True  # trains on new data plus the exemplars
    has_nme: ClassVar[bool] = False  # also evaluated with the nearest-mean-of-exemplars classifier
    needs_teacher: ClassVar[bool] = False
    primary_head: ClassVar[str] = "cnn"  # the head quoted in tables
    freeze_old_classes: ClassVar[bool] = False  # old classes' head weights get learning rate 0 in later phases

    def __init__(self, params: Any, backbone: nn.Module, device: torch.device) -> None:
        self.params = params
        self.device = device
        self.net = IncrementalNet(backbone, self._make_head(backbone.out_dim)).to(device)
        self.teacher: IncrementalNet | None = None
        self.class_means: torch.Tensor | None = None
        self.phase_logs: dict[str, dict[str, list[dict[str, Any]]]] = {}

    def _make_head(self, dim: int) -> _BlockHead:
        if self.head == "cosine":
            return CosineHead(dim)
        if self.head == "lsc":
            return LSCHead(dim, getattr(self.params, "proxies", 10))
        return LinearHead(dim)

    @property
    def eval_heads(self) -> tuple[str, ...]:
        return ("cnn", "nme") if self.has_nme else ("cnn",)

    # --- lifecycle --------------------------------------------------------------------------------
    def before_phase(self, ctx: PhaseContext) -> None:
        if ctx.phase > 0 and self.needs_teacher:
            self.teacher = frozen_copy(self.net)
        self.net.head.expand(ctx.n_new, self.init_new_weights(ctx))

    def init_new_weights(self, ctx: PhaseContext) -> torch.Tensor | None:
        return None

    def train_indices(self, ctx: PhaseContext) -> np.ndarray:
        new = ctx.scenario.train_indices(ctx.phase)
        if self.uses_memory and len(ctx.memory):
            return np.concatenate([new, ctx.memory.indices()])
        return new

    def trainable_parameters(self, ctx: PhaseContext) -> Iterable[nn.Parameter]:
        frozen = {id(b) for b in list(self.net.head.blocks)[: ctx.phase]} if self.freeze_old_classes else set()
        return [p for p in self.net.parameters() if p.requires_grad and id(p) not in frozen]

    def prepare_run(self, data: Any, protocol: Protocol, preprocess: Callable[..., torch.Tensor]) -> None:
        """Called once before any phase with the run's :class:`~scarce.cil.data.CILData`, protocol and batch
        preprocessing (uint8 images, generator → normalised batch)."""

    def log_phase(self, group: str, key: str, entry: dict[str, Any]) -> None:
        """Record what a method measured in a phase; reported as ``method_report[group][key]`` (a list, one entry
        per call) and kept in checkpoints, so a resumed run reports the same."""
        self.phase_logs.setdefault(group, {}).setdefault(key, []).append(entry)

    def report(self) -> dict[str, Any]:
        """What the method measured about itself during the run (``metrics.json``: ``method_report``)."""
        return {group: dict(logs) for group, logs in self.phase_logs.items()}

    def loss(self, x: torch.Tensor, y: torch.Tensor, ctx: PhaseContext) -> tuple[torch.Tensor, dict[str, float]]:
        out = self.net(x)
        loss, logs = self.supervised_loss(out, y, ctx)
        if self.teacher is None:
            return loss, logs
        kd, kd_logs = self.distillation(out, x, ctx)
        return loss + kd, {**logs, **kd_logs}

    def supervised_loss(self, out: dict[str, Any], y: torch.Tensor, ctx: PhaseContext) -> tuple[torch.Tensor, dict[str, float]]:
        """The terms that need labels, on the network's outputs ``out`` for a labelled batch."""
        raise NotImplementedError

    def distillation(self, out: dict[str, Any], x: torch.Tensor, ctx: PhaseContext) -> tuple[torch.Tensor, dict[str, float]]:
        """The label-free terms against the teacher, on the network's outputs ``out`` for images ``x`` (any
        images: the labelled batch or unlabelled ones). Only called once a teacher exists."""
        raise NotImplementedError

    def end_epoch(self, ctx: PhaseContext, epoch: int, lr_scale: float) -> None:
        """Called after each training epoch; ``lr_scale`` is the schedule's current factor on the phase's
        learning rate (for updates that follow the model's schedule)."""

    def update_memory(self, ctx: PhaseContext) -> None:
        if not (self.uses_memory or self.has_nme):
            return
        ctx.memory.update(
            ctx.n_seen, ctx.new_labels, ctx.scenario.class_indices,
            lambda idx: self.extract(ctx, idx), ctx.generator("memory"),
        )

    def after_phase(self, ctx: PhaseContext) -> None:
        if self.has_nme:
            self.class_means = self.compute_class_means(ctx)

    # --- features, class means, prediction -----------------------------------------------------------
    @torch.no_grad()
    def extract(self, ctx: PhaseContext, indices: np.ndarray, flip: bool = False, normalize: bool = True) -> torch.Tensor:
        """Backbone features of training images (eval mode, no augmentation), in fp32 under every ``train.amp``:
        they feed herding and class means (see :mod:`scarce.cil.trainer`)."""
        was_training = self.net.training
        self.net.eval()
        out = []
        for start in range(0, len(indices), 256):
            x = ctx.load(indices[start : start + 256], None)
            f = self.net.backbone(x)[0]
            if normalize:
                f = F.normalize(f, dim=1)
            if flip:
                g = self.net.backbone(x.flip(-1))[0]
                f = (f + (F.normalize(g, dim=1) if normalize else g)) / 2
            out.append(f)
        self.net.train(was_training)
        return torch.cat(out) if out else torch.zeros(0, self.net.backbone.out_dim, device=self.device)

    def compute_class_means(self, ctx: PhaseContext) -> torch.Tensor:
        """iCaRL class means: mean of the L2-normalised exemplar features (each averaged with its horizontal
        flip when the data is flip-augmented), normalised again."""
        means = []
        for label in range(ctx.n_seen):
            idx = ctx.memory.exemplars[label]
            means.append(F.normalize(self.extract(ctx, idx, flip=ctx.flips).mean(0), dim=0))
        return torch.stack(means)

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.net(x)
        scores = {"cnn": out["logits"]}
        if self.has_nme and self.class_means is not None:
            scores["nme"] = nme_scores(out["features"], self.class_means)
        return scores

    # --- state --------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "net": self.net.state_dict(),
            "sizes": self.net.head.block_sizes,
            "teacher": None if self.teacher is None else self.teacher.state_dict(),
            "teacher_sizes": None if self.teacher is None else self.teacher.head.block_sizes,
            "class_means": self.class_means,
            "phase_logs": self.phase_logs,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.head.resize(state["sizes"])
        self.net.load_state_dict(state["net"])
        self.net.to(self.device)
        self.teacher = None
        if state["teacher"] is not None:
            self.teacher = frozen_copy(self.net)
            self.teacher.head.resize(state["teacher_sizes"])
            self.teacher.load_state_dict(state["teacher"])
            self.teacher.to(self.device)
            for p in self.teacher.parameters():
                p.requires_grad_(False)
        self.class_means = state["class_means"]
        self.phase_logs = state.get("phase_logs", {})


def nme_scores(features: torch.Tensor, class_means: torch.Tensor) -> torch.Tensor:
    """Nearest-mean-of-exemplars scores: ``-||f/|f| - mu_c||^2`` (the arg-max is the nearest class mean)."""
    f = F.normalize(features.float(), dim=1)  # features of an autocast forward meet the fp32 means in fp32
    return -torch.cdist(f, class_means).pow(2)


def balanced_head_finetune(learner: Learner, ctx: PhaseContext, params: list[nn.Parameter], epochs: int, lr: float,
                           loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], *, augment: bool = False,
                           weight_decay: float = 0.0, milestones: Iterable[int] = (), gamma: float = 0.1) -> None:
    """Class-balanced finetuning of classifier parameters ``params`` on the exemplar memory, cut to the same
    number of images for every seen class (:meth:`Memory.balanced_indices`: under RMM the classes hold unequal
    numbers); the backbone is frozen, batch norm in eval mode. Its steps run through ``ctx.gpu`` (autocast of
    the features and loss; fp16's gradient scaler) like the phase's.

    ``loss_fn(features, labels)`` sees backbone features computed without gradient. ``augment=False``
    computes them once, without augmentation (seconds); ``augment=True`` recomputes them on every batch of
    augmented images, as a training loop over the memory does. SGD (momentum 0.9, ``weight_decay``) over
    ``epochs`` passes, the learning rate multiplied by ``gamma`` at each epoch in ``milestones``."""
    idx = ctx.memory.balanced_indices()
    if epochs <= 0 or len(idx) == 0:
        return
    labels = ctx.targets(idx)
    cached = None if augment else learner.extract(ctx, idx, normalize=False)
    opt = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, sorted(milestones), gamma=gamma)
    gen = ctx.generator("balanced-finetune")
    was_training = learner.net.training
    learner.net.eval()
    try:
        for epoch in range(epochs):
            perm = torch.randperm(len(idx), generator=gen).to(ctx.device)
            for start in range(0, len(idx), ctx.batch_size):
                b = perm[start : start + ctx.batch_size]
                with ctx.gpu.autocast():
                    if cached is None:
                        with torch.no_grad():
                            x = ctx.load(idx[b.cpu().numpy()], ctx.generator("balanced-finetune", epoch, start))
                            feats = learner.net.backbone(x)[0]
                    else:
                        feats = cached[b]
                    loss = loss_fn(feats, labels[b])
                opt.zero_grad(set_to_none=True)
                ctx.gpu.scale(loss).backward()
                ctx.gpu.step(opt)
            sched.step()
    finally:
        learner.net.train(was_training)
