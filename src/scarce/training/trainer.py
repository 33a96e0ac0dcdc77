"""Classifier training on image-level labels, resumable with identical results.

Recipe (IRN's ``train_cam``, with sizes scaled to the data): SGD, poly learning-rate decay, the head at
``head_lr_mult`` × the backbone's rate (the objective's ``parameter_groups`` decide which parameters are
"head": ReCAM's keeps the classifier at the backbone's rate), BatchNorm frozen in eval mode,
flip/rescale/crop augmentation.

Reproducibility: the sample order of an epoch, every augmentation, and the torch RNG of every step are
functions of (seed, epoch, step), so a run resumed from any checkpoint reaches the same weights as an
uninterrupted run. Checkpoints are written atomically after every epoch (and every
``checkpoint_every`` steps when set); a non-finite loss stops training with the last checkpoint intact.

``irn_momentum_quirk`` reproduces IRN's ``PolyOptimizer``, which passes weight decay as SGD's third
positional argument, i.e. momentum = 1e-4 (see the shared reference); off by default.

Several processes (``torchrun``, see :mod:`scarce.distributed` and docs/scaling.md): ``batch_size`` is the
global batch; each rank trains on its part of every batch and the gradients are summed over ranks, so N
processes reach the weights of one process (to float tolerance) when the objective is a mean of per-image
terms and BN is frozen (the default) or synced (``freeze_bn: false`` syncs it over ranks). Only rank 0
writes checkpoints and the log; a checkpoint resumes under any number of processes. The random draws
*inside* an objective (e.g. PuzzleCAM's tiling) are seeded by (seed, epoch, step, rank) with several ranks.

Device (``device``, ``amp``, ``channels_last``, ``pin_memory``): ``cpu`` by default, so CPU results are
unchanged; ``auto`` takes this rank's GPU when there is one. ``amp: bf16 | fp16`` runs the forward pass in
autocast (fp16 with a gradient scaler). These settings do not change what a checkpoint is: a run may resume
on another device or precision.
"""

from __future__ import annotations

import csv
import io
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from scarce.data.base import WeakDataset
from scarce.distributed import (all_sum, barrier, batch_part, check_batch, resolve_device, sum_gradients,
                                synced_batches, world)
from scarce.errors import ScarceError, TrainingError
from scarce.io import save_torch, write_text
from scarce.models.classifier import CamClassifier
from scarce.training.gpu_path import GPUPath
from scarce.training.losses import MultiLabelObjective, Objective
from scarce.training.transforms import AugmentConfig, augment, sample_generator, to_tensor


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 8
    batch_size: int = 16
    lr: float = 0.01
    head_lr_mult: float = 10.0
    weight_decay: float = 1e-4
    momentum: float = 0.9
    poly_power: float = 0.9
    freeze_bn: bool = True
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    num_workers: int = 0
    seed: int = 0
    checkpoint_every: int = 0
    irn_momentum_quirk: bool = False
    device: str = "cpu"  # cpu | auto | cuda | cuda:N (auto and cuda: this rank's GPU under torchrun)
    amp: str = "none"  # none | bf16 | fp16: autocast of the forward pass
    channels_last: bool = False  # NHWC memory format (faster convolutions on recent GPUs)
    pin_memory: bool = False  # page-locked host batches, copied without blocking (CUDA only)


DEVICE_FIELDS = ("device", "amp", "channels_last", "pin_memory")  # how, not what: not part of a checkpoint's identity


class AugmentedImages(Dataset):
    """(image, label vector) pairs with augmentation seeded by (seed, epoch, index)."""

    def __init__(self, dataset: WeakDataset, mean_std: tuple[tuple[float, ...], tuple[float, ...]],
                 cfg: AugmentConfig, seed: int) -> None:
        self.dataset, self.mean_std, self.cfg, self.seed = dataset, mean_std, cfg, seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.dataset.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        sample = self.dataset.samples[index]
        image = to_tensor(self.dataset.load_image(sample), self.mean_std)
        image = augment(image, self.cfg, sample_generator(self.seed, self.epoch, index))
        return image, torch.from_numpy(self.dataset.label_vector(sample))


def epoch_order(seed: int, epoch: int, n: int) -> list[int]:
    return np.random.default_rng([seed, epoch, 2**31 - 1]).permutation(n).tolist()


def poly_lr(base: float, step: int, total: int, power: float) -> float:
    return base * (1.0 - step / total) ** power


def _freeze_batchnorm(model: nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()
            for p in module.parameters():
                p.requires_grad_(False)


def _config_fingerprint(cfg: TrainConfig, extra: dict) -> dict:
    return {"train": {k: v for k, v in asdict(cfg).items() if k not in DEVICE_FIELDS}, **extra}


def build_optimizer(model: CamClassifier, objective: Objective, cfg: TrainConfig) -> torch.optim.SGD:
    """SGD over the objective's parameter groups (frozen parameters left out), each with its ``base_lr``."""
    groups = [{"params": [p for p in group.params if p.requires_grad], "base_lr": cfg.lr * group.lr_mult,
               "weight_decay": cfg.weight_decay if group.decay else 0.0}
              for group in objective.parameter_groups(model, cfg.head_lr_mult)]
    momentum = 1e-4 if cfg.irn_momentum_quirk else cfg.momentum
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=momentum, weight_decay=cfg.weight_decay)


@dataclass
class TrainResult:
    model_path: Path
    log_path: Path
    seconds: float | None
    """Training seconds of the steps kept, summed over every invocation that resumed the run (a killed run's
    steps after its last checkpoint are redone, so they count once); None when it resumed a checkpoint written
    before checkpoints kept the count."""


def train_classifier(
    model: CamClassifier,
    dataset: WeakDataset,
    cfg: TrainConfig,
    out_dir: str | Path,
    objective: Objective | None = None,
    resume: bool = False,
    identity: dict | None = None,
    progress: bool = True,
    on_step: Callable[[int, int], None] | None = None,
    pairs: Dataset | None = None,
    drop_last: bool = False,
) -> TrainResult:
    """Train ``model`` (and ``objective``'s own modules) on ``dataset``; write ``model.pt`` in ``out_dir``.

    ``identity`` (e.g. the model config) is stored in checkpoints; resuming with a different one is refused.
    ``on_step(epoch, step)`` is called after each optimisation step (tests use it to simulate a kill).
    ``pairs`` replaces the default (augmented image, label vector) items with other (input, target) items
    of the same samples, e.g. (image, label map) for segmentation; it has an ``epoch`` attribute that seeds
    its augmentation like :class:`AugmentedImages`. ``drop_last`` skips an epoch's last, incomplete batch
    (a batch of one breaks BatchNorm on 1×1 maps, such as the image pooling of DeepLab's ASPP).
    Under torchrun every rank calls this with the same arguments (see the module docstring).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path, model_path, log_path = out_dir / "checkpoint.pt", out_dir / "model.pt", out_dir / "train_log.csv"
    objective = objective or MultiLabelObjective()
    fingerprint = _config_fingerprint(cfg, {"objective": objective.name, **(identity or {})})
    if not dataset.samples:
        raise ScarceError(f"{dataset.root}: split {dataset.split!r} has no samples to train on")
    ranks = world()
    check_batch(cfg.batch_size, "train.batch_size")
    device = resolve_device(cfg.device)
    gpu = GPUPath(device, cfg.amp, cfg.channels_last, cfg.pin_memory)

    n = len(dataset.samples)
    steps_per_epoch = n // cfg.batch_size if drop_last else math.ceil(n / cfg.batch_size)
    if steps_per_epoch == 0:
        raise ScarceError(f"{dataset.root}: split {dataset.split!r} has {n} samples, "
                          f"fewer than one batch of {cfg.batch_size}; lower the batch size")
    if not cfg.freeze_bn and not drop_last and 0 < n % cfg.batch_size < ranks.size:
        raise ScarceError(f"train.batch_size={cfg.batch_size}: the last batch of {n % cfg.batch_size} samples cannot "
                          f"give each of {ranks.size} processes one, which synced BatchNorm needs; choose another batch size")
    total_steps = cfg.epochs * steps_per_epoch
    gpu.model(model.to(device))
    objective.to(device)
    if cfg.freeze_bn:
        _freeze_batchnorm(model)
    optimizer = build_optimizer(model, objective, cfg)
    parameters = [p for group in optimizer.param_groups for p in group["params"]]

    start_step, log_rows, carried, seconds_before = 0, [], (0.0, 0), 0.0
    if ckpt_path.exists():
        if not resume:
            raise ScarceError(f"{ckpt_path}: a checkpoint exists; pass --resume to continue it, or use another output folder")
        state = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        if state["fingerprint"] != fingerprint:
            raise ScarceError(f"{ckpt_path}: checkpoint was made with another configuration; refusing to resume")
        model.load_state_dict(state["model"])
        objective.load_state_dict(state["objective"])
        optimizer.load_state_dict(state["optimizer"])
        gpu.load_state_dict(state.get("scaler"))
        start_step, log_rows, carried = state["step"], state["log"], state["running"]
        seconds_before = state.get("seconds")
    barrier()  # every rank has read the checkpoint before rank 0 writes the next one

    images = pairs if pairs is not None else AugmentedImages(dataset, model.mean_std, cfg.augment, cfg.seed)
    started = time.perf_counter()
    bar = tqdm(total=total_steps, initial=start_step, desc="train", unit="step",
               disable=not (progress and ranks.is_main), leave=False)

    def seconds_so_far() -> float | None:
        return None if seconds_before is None else seconds_before + time.perf_counter() - started

    def save_checkpoint(step: int, running: tuple[float, int] = (0.0, 0)) -> None:
        if ranks.is_main:
            save_torch(ckpt_path, {"model": model.state_dict(), "objective": objective.state_dict(),
                                   "optimizer": optimizer.state_dict(), "scaler": gpu.state_dict(), "step": step,
                                   "log": log_rows, "running": running, "fingerprint": fingerprint,
                                   "seconds": seconds_so_far()})
            _write_log(log_path, log_rows)

    step, parts = start_step, {}
    for epoch in range(start_step // steps_per_epoch, cfg.epochs):
        images.epoch = epoch
        order = epoch_order(cfg.seed, epoch, len(images))
        first = step - epoch * steps_per_epoch  # batches of this epoch already done before a resume
        batches = [order[i : i + cfg.batch_size] for i in range(0, len(order), cfg.batch_size)][first:steps_per_epoch]
        local = [batch[batch_part(len(batch), ranks)] for batch in batches]  # this rank's part of each batch
        loaded = iter(DataLoader(images, batch_sampler=[part for part in local if part], num_workers=cfg.num_workers,
                                 pin_memory=gpu.pin))
        model.train()
        objective.train()
        if cfg.freeze_bn:
            _freeze_batchnorm(model)
        running, seen = carried if first else (0.0, 0)  # the epoch's loss sum so far, kept across a resume
        for batch, part in zip(batches, local):
            rank_seed = [ranks.rank] if ranks.size > 1 else []  # ranks draw different noise for different images
            torch.manual_seed(int(np.random.default_rng([cfg.seed, epoch, step, *rank_seed]).integers(2**62)))
            for group in optimizer.param_groups:
                group["lr"] = poly_lr(group["base_lr"], step, total_steps, cfg.poly_power)
            optimizer.zero_grad(set_to_none=True)
            loss_sum = torch.zeros((), dtype=torch.float64, device=device)
            host = next(loaded) if part else None
            batch_images, labels = (gpu.images(host[0]), gpu.batch(host[1])) if part else (None, None)
            # the mean over the whole batch: each rank's mean weighted by its share of what the mean divides by
            weight = objective.batch_weight(labels) if part else 0.0
            total = all_sum(torch.tensor(weight, dtype=torch.float64, device=device)).clamp_min(1e-12)
            if part:
                with synced_batches(), gpu.autocast():
                    loss, parts = objective(model, batch_images, labels, step / total_steps)
                gpu.scale(loss if ranks.size == 1 else loss * float(weight / total)).backward()
                loss_sum = loss.detach().double() * weight
            batch_loss = float(sum_gradients(parameters, loss_sum.reshape(1))[0] / total)
            if not math.isfinite(batch_loss):
                raise TrainingError(
                    f"non-finite loss ({batch_loss}) at epoch {epoch + 1}, step {step + 1}; "
                    f"the last checkpoint ({ckpt_path}) is kept: lower the learning rate and resume"
                )
            gpu.step(optimizer)
            step += 1
            running += batch_loss * len(batch)
            seen += len(batch)
            bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{running / seen:.4f}")
            if on_step is not None:
                on_step(epoch, step)
            if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step % steps_per_epoch:
                save_checkpoint(step, (running, seen))
        log_rows.append({"epoch": epoch + 1, "step": step, "loss": running / max(seen, 1),
                         "lr": optimizer.param_groups[0]["lr"], **{k: round(v, 6) for k, v in parts.items()}})
        save_checkpoint(step)
    bar.close()
    if ranks.is_main:
        save_torch(model_path, {"model": model.state_dict(), "objective": objective.state_dict(),
                                "fingerprint": fingerprint})
        _write_log(log_path, log_rows)
    barrier()  # the model file is there before any rank reads it
    return TrainResult(model_path, log_path, seconds_so_far())


def _write_log(path: Path, rows: list[dict]) -> None:
    if not rows:
        return
    keys = list(dict.fromkeys(k for row in rows for k in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=keys)
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buffer.getvalue())


def load_trained(model: CamClassifier, path: str | Path, objective: Objective | None = None) -> CamClassifier:
    """Load weights written by :func:`train_classifier` into ``model`` (and ``objective``)."""
    path = Path(path)
    if not path.is_file():
        raise ScarceError(f"{path}: trained model not found (run `scarce train` first)")
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state["model"])
    if objective is not None:
        objective.load_state_dict(state["objective"])
    return model.eval()
