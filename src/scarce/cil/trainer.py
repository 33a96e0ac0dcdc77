"""One training loop for every method: seeding, epochs, progress bars, checkpoints, resume, evaluation.

Reproducibility: every random draw of the loop comes from a generator seeded by (run seed, phase, epoch,
step, purpose) — the epoch's shuffling, each batch's augmentation, the memory's random selection — and the
global RNG is re-seeded from (seed, phase) before a phase builds its new layers. A mid-phase checkpoint
therefore only needs the position (phase, epoch, step) plus the model, optimiser and scheduler states for a
resumed run to replay exactly what an uninterrupted run does (same device and thread count; on CUDA the
deterministic kernels are switched on).

Checkpoints (``RUN/checkpoints/last.pt``, written atomically) hold the learner (model, teacher, class means),
optimiser, scheduler, RNG states, memory and the accuracy rows so far. One is written every
``train.checkpoint_every`` optimiser steps and at the end of every phase (kept as ``phase_K.pt`` too).
They hold only tensors and plain Python types and are read with ``torch.load(weights_only=True)``, which
cannot run code stored in a file.

Several processes (``torchrun``; :mod:`scarce.distributed`, docs/scaling.md): ``train.batch_size`` is the
global batch. Each rank loads, augments (with the batch's draws for its items) and trains on its part of
every batch; BatchNorm statistics of the training step span all ranks and the gradients are summed over
ranks, so N processes reach one process's weights to float tolerance for methods whose loss is a mean of
per-image terms (finetune, iCaRL, LwF); terms averaged over a subset of the batch (LUCIR's margin ranking
over old-class images, PODNet's) are averaged per rank, which makes them close, not equal. Everything else
(building layers, herding, balanced fine-tuning, evaluation) runs in every rank on the same data, so every
rank holds the same learner; rank 0 alone writes checkpoints and outputs, which resume under any number of
processes. With N processes a last batch of fewer than N images is skipped (one process keeps any of 2 or more).

The GPU path (``train.device``, ``amp``, ``channels_last``, ``pin_memory``; :mod:`scarce.training.gpu_path`,
the WSSS trainer's): every batch of images reaches the device through ``PhaseContext.load`` (pinned and
channels-last when asked). ``train.amp: bf16 | fp16`` runs the forward pass and loss of every training step
in autocast — the phase's loop (PlaceboCIL's candidate scoring and extra forward included, they are part of
its loss), LUCIR's and PODNet's class-balanced finetuning, AANets' aggregation steps — and the test-set
evaluation. fp16 scales the loss with one gradient scaler shared by those loops, whose state is in every
checkpoint, so a resumed run replays the uninterrupted one; ``amp`` is part of the configuration a resume
checks. Left in fp32, on purpose: feature extraction for herding, class means (NME), imprinting and PODNet's
k-means and PlaceboCIL's prototypes (greedy herding picks and nearest-mean decisions turn on differences
that bf16's 8-bit mantissa rounds away; one pass per phase, so autocast would save little), PlaceboCIL's
validation reward (a handful of exemplars per epoch) and Mnemonics' exemplar level (see
:mod:`scarce.cil.methods.mnemonics`).
"""

from __future__ import annotations

import hashlib
import random
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from scarce.cil.config import CILConfig
from scarce.cil.data import CILData, Preprocess, load_cifar100, load_fashion_mnist_cil, load_imagenet_subset
from scarce.cil.memory import Memory
from scarce.cil.methods import Learner, PhaseContext, build_learner
from scarce.cil.metrics import AccuracyMatrix, compute_metrics, DEFINITIONS
from scarce.cil.models import build_backbone
from scarce.cil.protocol import Protocol, Scenario
from scarce.cil.rmm import RMMAllocator
from scarce.config import changed_keys, to_dict
from scarce.distributed import (barrier, batch_part, check_batch, resolve_device, sum_gradients, synced_batches,
                                world)
from scarce.errors import ConfigError, TrainingError
from scarce.io import read_json, save_torch, write_json, write_text
from scarce.lock import run_lock
from scarce.provenance import environment
from scarce.training.gpu_path import GPUPath

CHECKPOINT_VERSION = 2  # 2: plain types only (numpy's RNG state as a tensor), loaded with weights_only=True
StepCallback = Callable[["Trainer", int, int, int], None]  # (trainer, phase, epoch, step) after each step


def derive_seed(*parts: Any) -> int:
    """A 63-bit seed from any tuple of values (stable across processes, unlike ``hash``)."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def make_generator(*parts: Any) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(derive_seed(*parts))
    return g


@contextmanager
def deterministic(device: torch.device, threads: int | None = None) -> Iterator[None]:
    """Deterministic kernels on CUDA (CPU kernels already are, for a fixed thread count; switching the flag on
    costs seconds of imports there) and optionally a thread count, both restored afterwards."""
    previous, previous_threads = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    if device.type == "cuda":
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        if device.type == "cuda":
            torch.use_deterministic_algorithms(previous)
        torch.set_num_threads(previous_threads)


def load_data(cfg: CILConfig) -> CILData:
    d = cfg.data
    if d.name == "fashion_mnist":
        data = load_fashion_mnist_cil(d.root, d.subset)
    elif d.name == "cifar100":
        if not d.root:
            raise ConfigError("data.root: give the CIFAR-100 python folder (meta, train, test)")
        data = load_cifar100(d.root)
    elif d.name == "imagenet_subset":
        if not d.root:
            raise ConfigError("data.root: give the ImageNet-subset folder (train/, val/, classes.txt)")
        data = load_imagenet_subset(d.root, d.class_list, d.image_size, d.cache)
    else:
        raise ConfigError(f"data.name: unknown dataset {d.name!r}; known: fashion_mnist, cifar100, imagenet_subset")
    if d.train_per_class is not None or d.test_per_class is not None:
        data = data.subsample(d.train_per_class, d.test_per_class, d.subsample_seed)
    return data


def build_protocol(cfg: CILConfig, data: CILData) -> Protocol:
    p = cfg.protocol
    return Protocol.build(
        data.n_classes, class_order=p.class_order, n_base=p.n_base, n_phases=p.n_phases, increment=p.increment,
        memory=to_dict(p.memory), class_names=data.class_names,
    )


@dataclass
class RunResult:
    run_dir: Path
    matrices: dict[str, AccuracyMatrix]  # per evaluation head ("cnn", "nme")
    metrics: dict[str, Any]  # the content of metrics.json


class Trainer:
    """Runs one configuration into ``run_dir`` (``acc_matrix.json``, ``metrics.json``, ``report.html``)."""

    def __init__(self, cfg: CILConfig, run_dir: str | Path, *, progress: bool = True,
                 callbacks: list[StepCallback] | tuple[StepCallback, ...] = (), data: CILData | None = None,
                 allocator: RMMAllocator | None = None) -> None:
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.progress = progress
        self.callbacks = list(callbacks)
        self.device = resolve_device(cfg.train.device)
        t = cfg.train
        self.gpu = GPUPath(self.device, t.amp, t.channels_last, t.pin_memory)
        self.world = world()
        check_batch(cfg.train.batch_size, "train.batch_size")
        self.data = data if data is not None else load_data(cfg)
        self.protocol = build_protocol(cfg, self.data)
        self.scenario = Scenario(self.protocol, self.data.train.labels, self.data.test.labels)
        augment = self.data.default_augment if cfg.data.augment == "auto" else cfg.data.augment
        self.pre = Preprocess(self.data.mean, self.data.std, augment)
        sample = self.data.train.load(np.array([0]))
        self.in_channels, self.image_size = int(sample.shape[1]), int(sample.shape[-1])
        self.learner = self._new_learner()
        self.gpu.model(self.learner.net)  # copies (teacher, AANets' branches) and loaded weights keep the layout
        self.learner.prepare_run(self.data, self.protocol, self.pre)  # before a resume reads its checkpoint
        self.memory = Memory(self.protocol.memory)
        # a memory policy (RMM) sets each phase's memory limits and new-class data; None: the protocol's memory
        self.allocator = allocator if allocator is not None else (RMMAllocator.for_run(cfg, self.protocol) if cfg.rmm is not None else None)
        self.persist = True  # write checkpoints and policy files (False while simulating a pseudo task)
        self.rows: dict[str, list[list[float]]] = {h: [] for h in self.learner.eval_heads}
        self.train_time = 0.0
        self.global_step = 0

    # --- construction ---------------------------------------------------------------------------
    def _new_learner(self) -> Learner:
        torch.manual_seed(derive_seed(self.cfg.seed, "init"))
        return build_learner(
            self.cfg.method,
            lambda last_relu: build_backbone(self.cfg.model.backbone, self.in_channels, self.image_size, last_relu),
            self.device,
        )

    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / "checkpoints" / "last.pt"

    def load(self, indices: np.ndarray, generator: torch.Generator | None,
             within: tuple[int, int] | None = None) -> torch.Tensor:
        """Training images (learned exemplar images substituted), augmented; ``within`` as in :class:`Preprocess`."""
        images = self.memory.substitute(indices, self.data.train.load(indices))
        return self.gpu.images(self.pre(images, generator, within))

    def context(self, phase: int) -> PhaseContext:
        scenario = self.scenario if self.allocator is None else self.allocator.scenario(phase, self.scenario)
        return PhaseContext(
            phase=phase, protocol=self.protocol, scenario=scenario, memory=self.memory, device=self.device,
            flips=self.pre.flips, load=lambda indices, generator: self.load(indices, generator), gpu=self.gpu,
            generator=lambda *tags: make_generator(self.cfg.seed, phase, *tags),
            batch_size=self.cfg.train.batch_size, weight_decay=self.cfg.train.weight_decay, pixels=self.pre.to_pixels,
        )

    def _optimizer(self, ctx: PhaseContext) -> tuple[torch.optim.Optimizer, Any, int]:
        t = self.cfg.train
        epochs = t.base_epochs if (ctx.phase == 0 and t.base_epochs is not None) else t.epochs
        lr = t.base_lr if (ctx.phase == 0 and t.base_lr is not None) else t.lr
        params = list(self.learner.trainable_parameters(ctx))
        opt = torch.optim.SGD(params, lr=lr, momentum=t.momentum, weight_decay=t.weight_decay)
        if t.schedule == "multistep":
            milestones = sorted({max(1, round(m * epochs)) for m in t.milestones})
            sched: Any = torch.optim.lr_scheduler.MultiStepLR(opt, milestones, gamma=t.gamma)
        elif t.schedule == "cosine":
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs))
        elif t.schedule == "constant":
            sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
        else:
            raise ConfigError(f"train.schedule: unknown schedule {t.schedule!r}; known: multistep, cosine, constant")
        return opt, sched, epochs

    # --- checkpoints ----------------------------------------------------------------------------
    def _save(self, phase: int, stage: str, epoch: int = 0, step: int = 0, opt=None, sched=None) -> None:
        if not self.world.is_main or not self.persist:
            return
        state = {
            "version": CHECKPOINT_VERSION,
            "config": to_dict(self.cfg),
            "phase": phase, "stage": stage, "epoch": epoch, "step": step,
            "global_step": self.global_step,
            "learner": self.learner.state_dict(),
            "optimizer": None if opt is None else opt.state_dict(),
            "scheduler": None if sched is None else sched.state_dict(),
            "rng": {"torch": torch.get_rng_state(), "numpy": _numpy_rng_state(), "python": random.getstate()},
            "scaler": self.gpu.state_dict(),
            "memory": self.memory.state_dict(),
            "allocator": None if self.allocator is None else self.allocator.state_dict(),
            "rows": self.rows,
            "train_time": self.train_time + (time.perf_counter() - self._t0),
        }
        save_torch(self.checkpoint_path, state)
        if stage == "done" and self.cfg.train.keep_phase_checkpoints:
            save_torch(self.run_dir / "checkpoints" / f"phase_{phase}.pt", state)

    def _load(self) -> dict[str, Any]:
        path = self.checkpoint_path
        if not path.is_file():
            raise ConfigError(f"{path}: no checkpoint to resume from (run without --resume to start)")
        try:
            state = torch.load(path, map_location=self.device, weights_only=True)
        except Exception as exc:
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise TrainingError(
                f"{path}: cannot read checkpoint ({exc.__class__.__name__}: {first_line}); checkpoints written before "
                f"format {CHECKPOINT_VERSION} hold objects that are not loaded safely: start the run again"
            ) from None
        if state.get("version") != CHECKPOINT_VERSION:
            raise TrainingError(f"{path}: checkpoint version {state.get('version')} is not {CHECKPOINT_VERSION}")
        diff = changed_keys(state["config"], self.cfg, values=True)
        if diff:
            raise ConfigError(f"{path}: the checkpoint was made with a different configuration ({'; '.join(diff[:5])})")
        self.learner.load_state_dict(state["learner"])
        self.memory.load_state_dict(state["memory"])
        if self.allocator is not None:
            self.allocator.load_state_dict(state["allocator"])
        self.rows = state["rows"]
        self.train_time = state["train_time"]
        self.global_step = state["global_step"]
        torch.set_rng_state(state["rng"]["torch"].cpu())
        _set_numpy_rng_state(state["rng"]["numpy"])
        random.setstate(state["rng"]["python"])
        self.gpu.load_state_dict(state.get("scaler"))
        return state

    # --- the loop -------------------------------------------------------------------------------
    def run(self, resume: bool = False) -> RunResult:
        """Run every phase (from the last checkpoint with ``resume``), holding the folder's lock."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with run_lock(self.run_dir):
            return self._run(resume)

    def _run(self, resume: bool) -> RunResult:
        self._t0 = time.perf_counter()
        state = self._load() if resume else None
        if not resume and self.world.is_main:
            write_text(self.run_dir / "config.yaml", _yaml(self.cfg))
        barrier()  # every rank has read the checkpoint before rank 0 writes the next one
        start_phase = 0
        if state is not None:
            start_phase = state["phase"] + 1 if state["stage"] == "done" else state["phase"]
        with deterministic(self.device, self.cfg.train.threads):
            for phase in range(start_phase, self.protocol.n_tasks):
                mid = state if (state is not None and state["phase"] == phase and state["stage"] == "train") else None
                self._run_phase(phase, mid)
                self._write_outputs(final=phase == self.protocol.n_tasks - 1)
        if start_phase >= self.protocol.n_tasks:  # resumed a finished run: rewrite the outputs
            self._write_outputs(final=True)
        barrier()  # rank 0's outputs are written before any rank reads them
        return self.result()

    def simulate(self) -> dict[str, list[list[float]]]:
        """Run every phase in memory, writing nothing (RMM's pseudo tasks); the accuracy rows per head."""
        self.persist = False
        self._t0 = time.perf_counter()
        with deterministic(self.device, self.cfg.train.threads):
            for phase in range(self.protocol.n_tasks):
                self._run_phase(phase, None)
        return self.rows

    def _run_phase(self, phase: int, mid: dict[str, Any] | None) -> None:
        if mid is None and self.allocator is not None:
            self.allocator.begin_phase(self, phase)
        ctx = self.context(phase)
        if mid is None:
            torch.manual_seed(derive_seed(self.cfg.seed, phase, "build"))
            self.learner.before_phase(ctx)
        opt, sched, epochs = self._optimizer(ctx)
        start_epoch = start_step = 0
        if mid is not None:
            opt.load_state_dict(mid["optimizer"])
            sched.load_state_dict(mid["scheduler"])
            start_epoch, start_step = mid["epoch"], mid["step"]
        self._train(ctx, opt, sched, epochs, start_epoch, start_step)
        self.learner.update_memory(ctx)
        self.memory.assert_within_budget()
        self.learner.after_phase(ctx)
        self._evaluate(ctx)
        self._save(phase, "done")

    def _batches(self, indices: np.ndarray, phase: int, epoch: int) -> list[np.ndarray]:
        bs = self.cfg.train.batch_size
        perm = torch.randperm(len(indices), generator=make_generator(self.cfg.seed, phase, epoch, "shuffle")).numpy()
        order = indices[perm]
        batches = [order[i : i + bs] for i in range(0, len(order), bs)]
        # batch norm cannot train on one image, nor can a process without one
        if len(batches) > 1 and len(batches[-1]) < max(2, self.world.size):
            batches.pop()
        return batches

    def _train(self, ctx: PhaseContext, opt, sched, epochs: int, start_epoch: int, start_step: int) -> None:
        indices = self.learner.train_indices(ctx)
        n_batches = len(self._batches(indices, ctx.phase, 0))
        net = self.learner.net
        parameters = [p for group in opt.param_groups for p in group["params"]]
        bar = _progress(total=epochs * n_batches, initial=start_epoch * n_batches + start_step,
                        desc=f"{self.learner.name} phase {ctx.phase}/{self.protocol.n_phases}",
                        disable=not (self.progress and self.world.is_main))
        every = self.cfg.train.checkpoint_every
        try:
            for epoch in range(start_epoch, epochs):
                net.train()
                batches = self._batches(indices, ctx.phase, epoch)
                for step in range(start_step if epoch == start_epoch else 0, len(batches)):
                    batch = batches[step]
                    part = batch_part(len(batch), self.world)
                    idx = batch[part]
                    x = self.load(idx, make_generator(self.cfg.seed, ctx.phase, epoch, step, "augment"),
                                  (part.start, len(batch)) if self.world.size > 1 else None)
                    y = ctx.targets(idx)
                    with synced_batches(), self.gpu.autocast():
                        loss, logs = self.learner.loss(x, y, ctx)
                    net.zero_grad(set_to_none=True)
                    # this rank's mean weighted by its share; the summed gradients are the whole batch's mean
                    self.gpu.scale(loss if self.world.size == 1 else loss * (len(idx) / len(batch))).backward()
                    # the whole batch's loss comes with the gradients, so every rank stops together on a bad one
                    loss_sum = sum_gradients(parameters, loss.detach().double().reshape(1) * len(idx))[0]
                    if not torch.isfinite(loss_sum):
                        raise TrainingError(
                            f"non-finite loss ({loss.item()}; parts {logs}) in phase {ctx.phase}, epoch {epoch}, step {step} "
                            f"of method {self.learner.name}; the last checkpoint {self.checkpoint_path} is kept "
                            "(lower train.lr or check the data)"
                        )
                    self.gpu.step(opt)
                    self.global_step += 1
                    bar.update(1)
                    bar.set_postfix(loss=f"{float(loss_sum) / len(batch):.3f}", refresh=False)
                    if every and self.global_step % every == 0:
                        self._save(ctx.phase, "train", epoch, step + 1, opt, sched)
                    for callback in self.callbacks:
                        callback(self, ctx.phase, epoch, step)
                group = opt.param_groups[0]
                self.learner.end_epoch(ctx, epoch, group["lr"] / group["initial_lr"] if group["initial_lr"] else 1.0)
                sched.step()
        finally:
            bar.close()

    @torch.no_grad()
    def _evaluate(self, ctx: PhaseContext) -> None:
        net = self.learner.net
        net.eval()
        idx = self.scenario.test_indices(ctx.phase)
        targets = torch.as_tensor(self.scenario.test_targets[idx])
        tasks = torch.as_tensor(self.scenario.test_task(idx))
        preds: dict[str, list[torch.Tensor]] = {h: [] for h in self.learner.eval_heads}
        bs = self.cfg.train.eval_batch_size
        for start in range(0, len(idx), bs):
            x = self.gpu.images(self.pre(self.data.test.load(idx[start : start + bs])))
            with self.gpu.autocast():
                scores_per_head = self.learner.predict(x)
            for head, scores in scores_per_head.items():
                preds[head].append(scores.argmax(dim=1).cpu())
        for head in self.learner.eval_heads:
            correct = (torch.cat(preds[head]) == targets).double()
            row = [100.0 * float(correct[tasks == t].mean()) for t in range(ctx.phase + 1)]
            self.rows[head].append(row)
        net.train()

    # --- outputs --------------------------------------------------------------------------------
    def matrices(self) -> dict[str, AccuracyMatrix]:
        sizes = self.scenario.task_sizes()
        return {h: AccuracyMatrix(rows, sizes) for h, rows in self.rows.items() if rows}

    def result(self) -> RunResult:
        mats = self.matrices()
        return RunResult(self.run_dir, mats, read_json(self.run_dir / "metrics.json"))

    def _write_outputs(self, final: bool) -> None:
        if not self.world.is_main:
            return
        mats = self.matrices()
        write_json(self.run_dir / "acc_matrix.json", {
            "unit": "percent",
            "description": "per_task[p][t]: top-1 accuracy after phase p on the test images of the classes introduced "
                           "in phase t, predicting among all classes seen so far",
            "protocol": self.protocol.to_dict(),
            "tasks": [list(self.protocol.task_classes(t)) for t in range(self.protocol.n_tasks)],
            "task_sizes": self.scenario.task_sizes(),
            "heads": {h: {"per_task": m.per_task} for h, m in mats.items()},
        })
        elapsed = self.train_time + (time.perf_counter() - self._t0)
        metrics = {
            "method": self.learner.name,
            "seed": self.cfg.seed,
            "dataset": self.data.name,
            "data_source": self.data.source,
            "protocol": self.protocol.describe(),
            "complete": final,
            "phases_done": len(next(iter(self.rows.values()))),
            "primary_head": self.learner.primary_head,
            "heads": {h: compute_metrics(m) for h, m in mats.items()},
            "memory_per_class": {str(k): v for k, v in self.memory.counts().items()},
            **({"method_report": report} if (report := self.learner.report()) else {}),
            "memory_policy": None if self.allocator is None else self.allocator.describe(),
            "wall_time_s": elapsed,
            "environment": environment(),
            "unit": "percent",
            "definitions": DEFINITIONS,
        }
        write_json(self.run_dir / "metrics.json", metrics)
        if final:
            from scarce.cil.report import write_run_report

            write_run_report(self.run_dir, metrics, {h: m for h, m in mats.items()}, self.protocol)


def _numpy_rng_state() -> dict[str, Any]:
    """numpy's global RNG state in plain types, so that checkpoints load with ``weights_only=True``."""
    name, keys, pos, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    return {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)}


def _set_numpy_rng_state(state: dict[str, Any]) -> None:
    np.random.set_state((state["name"], state["keys"].cpu().numpy().astype(np.uint32), state["pos"],
                         state["has_gauss"], state["cached_gaussian"]))


def _progress(**kwargs: Any):
    from tqdm.auto import tqdm

    return tqdm(leave=False, dynamic_ncols=True, **kwargs)


def _yaml(cfg: CILConfig) -> str:
    from scarce.config import dump_yaml

    return dump_yaml(cfg)


def run(cfg: CILConfig, run_dir: str | Path, *, resume: bool = False, progress: bool = True,
        callbacks: list[StepCallback] | tuple[StepCallback, ...] = (), data: CILData | None = None) -> RunResult:
    """Run (or resume) one class-incremental experiment into ``run_dir``."""
    return Trainer(cfg, run_dir, progress=progress, callbacks=callbacks, data=data).run(resume=resume)
