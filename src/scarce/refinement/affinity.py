"""The inter-pixel affinity network of the random walk (AffinityNet, Ahn & Kwak CVPR'18; IRN, Ahn et al. CVPR'19).

What the official code does, and what is kept here:

- **Affinity.** AffinityNet (``psa/network/resnet38_aff.py``) and IRN's ``indexing.feature_to_affinity`` both
  compute ``a_ij = exp(-mean_c |f_i[c] - f_j[c]|)``: the L1 distance divided by the number of channels (the
  papers write ``‖f_i − f_j‖₁``; the code's mean keeps the scale independent of the embedding width, and
  it is what is used here). ``a_ii = 1``; pairs that leave the image have no affinity.
- **Neighbourhood.** Pairs ``(i, i + o)`` with ``o`` in the open disc ``|o| < radius`` (PSA's
  ``get_indices_of_pairs`` and IRN's ``PathIndex`` search directions: ``(0, x)`` for ``0 < x < r``, then
  ``(y, x)`` for ``0 < y < r``, ``|x| < r``, ``x² + y² < r²``; each unordered pair once).
- **Network.** The classifier's backbone is frozen, as in IRN (``train_irn``: the backbone's outputs are
  detached; only the new branch learns). The branch is IRN's edge branch in shape: each backbone level
  at stride ≥ 4 goes through a 1×1 convolution to 32 channels, GroupNorm(4) and ReLU and is resized to
  stride 4; the concatenation goes through AffinityNet's final 1×1 convolution + ELU (``f9``) to the
  embedding. Initialisation as in PSA (Kaiming for the per-level convolutions, Xavier with gain 4 for ``f9``).
- **Labels** (PSA ``ExtractAffinityLabelInRadius``): from a seed map with 0 = background, ``c + 1`` = class
  and 255 = ignore, a pair touching 255 is ignored, equal labels are positive (split background-background
  and foreground-foreground), different labels negative (two different classes included).
- **Loss** (PSA ``train_aff.py``): ``bg/4 + fg/4 + neg/2`` with ``bg = Σ −log(a + 1e-5) / (#bg + 1e-5)``,
  ``fg`` likewise, ``neg = Σ −log(1 + 1e-5 − a) / (#neg + 1e-5)``.
- **Training** (IRN ``train_irn``): SGD, lr 0.1, weight decay 1e-4, poly decay (power 0.9), 3 epochs. IRN's
  ``PolyOptimizer`` passes the weight decay as SGD's momentum argument (momentum 1e-4, i.e. none): the
  default ``momentum: 0`` keeps that effective behaviour. Departures, with their reasons:

  * batch 16 instead of 32, and 5 epochs instead of 3: the default scenes have 360 training images,
    ~30× fewer than VOC's train_aug, so IRN's 3 × 331 steps become 3 × 23; 5 × 23 steps reach a loss
    plateau on the scenes while staying at a few CPU-minutes;
  * crop 512 (IRN) is kept; images smaller than the crop are used whole (IRN pads them with ignore);
    augmentation is the horizontal flip only: IRN's random rescale would have to rescale the CAMs the
    labels come from, and the scenes already vary object scale;
  * the confident seeds are thresholded CAMs (``cams_to_confident_labels``), without IRN's label CRF,
    at thresholds the pipeline chooses on val (``RefineContext.confident``), not IRN's fixed 0.30 / 0.05;
  * the seed labels live on the stride-4 grid as thresholds of the CAM averaged over each 4×4 cell (PSA
    averages its CRF scores over 8×8 cells before the argmax; IRN takes the nearest pixel).
- **Train radius.** 5 at stride 4, the radius the walk uses. IRN trains at radius 10 because its
  affinity is a path maximum of boundary scores that generalises along the path; AffinityNet trains and
  infers at the same radius (5 at its stride 8), which is the model used here.

Training is resumable with identical weights: sample order, flips and crops are functions of (seed, epoch,
index), a checkpoint is written atomically after every epoch, and a resumed run continues at the next epoch.
Under ``torchrun`` it is sharded like the classifier's training (:func:`train_affinity`): each rank takes
its part of every global batch, and N processes train one process's network to float tolerance (tested).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from scarce.cams.store import load_cam
from scarce.data.base import WeakDataset
from scarce.distributed import all_max, all_sum, barrier, batch_part, check_batch, sum_gradients, world
from scarce.errors import ConfigError, ScarceError, TrainingError
from scarce.io import IGNORE_INDEX, save_torch
from scarce.models.classifier import CamClassifier
from scarce.pseudo.masks import cams_to_confident_labels
from scarce.training.trainer import epoch_order, poly_lr
from scarce.training.transforms import sample_generator, to_tensor

STRIDE = 4  # the embedding's and the walk's grid (IRN: stride 4)

Offset = tuple[int, int]


def half_disc_offsets(radius: int) -> list[Offset]:
    """PSA's / IRN's search directions: each unordered pair within ``|o| < radius`` once."""
    offsets = [(0, x) for x in range(1, radius)]
    offsets += [(y, x) for y in range(1, radius) for x in range(-radius + 1, radius) if x * x + y * y < radius * radius]
    return offsets


def disc_offsets(radius: int) -> list[Offset]:
    """Every neighbour of a pixel in the walk: itself, the search directions and their opposites."""
    half = half_disc_offsets(radius)
    return [(0, 0)] + half + [(-dy, -dx) for dy, dx in half]


def overlap(height: int, width: int, dy: int, dx: int) -> tuple[tuple[slice, slice], tuple[slice, slice]]:
    """Where pixel i and its neighbour i + (dy, dx) are both on a height × width map: (i's region, the
    neighbours' region), as slices of the last two dimensions (empty when the offset leaves the map)."""
    here = (slice(max(0, -dy), max(0, height - max(0, dy))), slice(max(0, -dx), max(0, width - max(0, dx))))
    there = (slice(max(0, dy), max(0, height + min(0, dy))), slice(max(0, dx), max(0, width + min(0, dx))))
    return here, there


def shifted(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """``out[..., y, x] = x[..., y + dy, x + dx]``, 0 where that position leaves the map."""
    here, there = overlap(*x.shape[-2:], dy, dx)
    out = torch.zeros_like(x)
    out[(..., *here)] = x[(..., *there)]
    return out


def pair_affinities(features: torch.Tensor, offsets: Sequence[Offset]) -> torch.Tensor:
    """(B, D, h, w) embedding → (B, len(offsets), h, w): ``exp(-mean_c |f_i - f_{i+o}|)``, 0 off the map."""
    batch, _, height, width = features.shape
    out = features.new_zeros(batch, len(offsets), height, width)
    for n, (dy, dx) in enumerate(offsets):
        here, there = overlap(height, width, dy, dx)
        distance = (features[(..., *here)] - features[(..., *there)]).abs().mean(dim=1)
        out[(slice(None), n, *here)] = torch.exp(-distance)
    return out


def affinity_labels(labels: torch.Tensor, offsets: Sequence[Offset]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Seed maps (B, h, w) (0 bg, c + 1 class, 255 ignore) → (bg-positive, fg-positive, negative) pair masks,
    each (B, len(offsets), h, w) float; pairs touching 255 or leaving the map are in none of them."""
    known = labels != IGNORE_INDEX
    bg, fg, neg = [], [], []
    for dy, dx in offsets:
        other = shifted(labels, dy, dx)
        valid = known & shifted(known, dy, dx)  # shifted() fills with False off the map
        same = valid & (labels == other)
        bg.append(same & (labels == 0))
        fg.append(same & (labels != 0))
        neg.append(valid & (labels != other))
    return tuple(torch.stack(group, dim=1).float() for group in (bg, fg, neg))  # type: ignore[return-value]


def pair_counts(bg: torch.Tensor, fg: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """(3,) the numbers of background-positive, foreground-positive and negative pairs."""
    return torch.stack([bg.sum(), fg.sum(), neg.sum()])


def balanced_affinity_loss(aff: torch.Tensor, bg: torch.Tensor, fg: torch.Tensor, neg: torch.Tensor,
                           counts: torch.Tensor | None = None) -> torch.Tensor:
    """AffinityNet's loss: the three pair groups weighted 1/4, 1/4, 1/2, each averaged over its own pairs.

    ``counts`` are the pair counts the three sums are divided by: by default this batch's (:func:`pair_counts`);
    under torchrun those of the whole global batch, so that the ranks' losses add up to the batch's loss.
    """
    counts = pair_counts(bg, fg, neg) if counts is None else counts
    bg_loss = (-bg * torch.log(aff + 1e-5)).sum() / (counts[0] + 1e-5)
    fg_loss = (-fg * torch.log(aff + 1e-5)).sum() / (counts[1] + 1e-5)
    neg_loss = (-neg * torch.log(1.0 + 1e-5 - aff)).sum() / (counts[2] + 1e-5)
    return bg_loss / 4 + fg_loss / 4 + neg_loss / 2


def grid_size(height: int, width: int) -> tuple[int, int]:
    """The stride-4 grid of an image: cell (a, b) covers pixels [4a, 4a + 4) × [4b, 4b + 4)."""
    return math.ceil(height / STRIDE), math.ceil(width / STRIDE)


def to_grid(maps: torch.Tensor) -> torch.Tensor:
    """(..., H, W) maps → their means over the 4×4 cells of the stride-4 grid (edge cells: over the pixels they hold)."""
    height, width = maps.shape[-2:]
    lead = maps.shape[:-2]
    flat = maps.reshape(math.prod(lead), 1, height, width)
    h, w = grid_size(height, width)
    pad = (0, w * STRIDE - width, 0, h * STRIDE - height)
    sums = F.avg_pool2d(F.pad(flat, pad), STRIDE, divisor_override=1)
    counts = F.avg_pool2d(F.pad(torch.ones_like(flat[:1]), pad), STRIDE, divisor_override=1)
    return (sums / counts).reshape(*lead, h, w)


class BackboneLevels:
    """The frozen classifier backbone's feature levels at stride ≥ 4 (from timm's ``feature_info``), read by hooks."""

    def __init__(self, model: CamClassifier) -> None:
        info = getattr(model.backbone, "feature_info", None)
        info = getattr(info, "info", info)  # features_only models wrap the list in a FeatureInfo
        if not info:
            raise ConfigError(f"{type(model.backbone).__name__}: the affinity network needs timm's feature_info "
                              "to find the backbone's levels")
        self.model = model
        self.levels = [level for level in info if level["reduction"] >= STRIDE]
        self.channels = [int(level["num_chs"]) for level in self.levels]
        modules = dict(model.backbone.named_modules())
        self.modules = [modules[level["module"]] for level in self.levels]

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> list[torch.Tensor]:
        """RGB images in [0, 1] (B, 3, H, W) → one map per level, computed without gradient (frozen, as in IRN)."""
        mean, std = (torch.tensor(v, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
                     for v in self.model.mean_std)
        outputs: list[torch.Tensor] = []
        handles = [m.register_forward_hook(lambda _m, _i, out: outputs.append(out)) for m in self.modules]
        try:
            self.model.eval()
            self.model.features((images - mean) / std)
        finally:
            for handle in handles:
                handle.remove()
        return outputs


class AffinityNet(nn.Module):
    """The trainable branch: backbone levels → a stride-4 embedding whose L1 distances give the affinities."""

    def __init__(self, channels: Sequence[int], level_dim: int = 32, embed_dim: int = 128) -> None:
        super().__init__()
        self.levels = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, level_dim, 1, bias=False), nn.GroupNorm(4, level_dim), nn.ReLU(inplace=True))
            for c in channels)
        self.fuse = nn.Conv2d(level_dim * len(channels), embed_dim, 1, bias=False)
        for block in self.levels:
            nn.init.kaiming_normal_(block[0].weight)
        nn.init.xavier_uniform_(self.fuse.weight, gain=4)

    def forward(self, levels: Sequence[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        maps = [F.interpolate(block(x), size=size, mode="bilinear", align_corners=False)
                for block, x in zip(self.levels, levels)]
        return F.elu(self.fuse(torch.cat(maps, dim=1)))


def embed(net: AffinityNet, levels: BackboneLevels, images: torch.Tensor) -> torch.Tensor:
    """RGB images in [0, 1] → the (B, D, h, w) embedding on their stride-4 grid."""
    return net(levels(images), grid_size(*images.shape[-2:]))


@dataclass(frozen=True)
class AffinityTrainConfig:
    """Affinity network training; defaults and departures from IRN / AffinityNet in the module docstring."""

    epochs: int = 5
    batch_size: int = 16  # the global batch under torchrun, split over the ranks
    lr: float = 0.1
    weight_decay: float = 1e-4
    momentum: float = 0.0
    poly_power: float = 0.9
    crop_size: int = 512
    radius: int = 5
    level_dim: int = 32
    embed_dim: int = 128
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "crop_size", "radius", "level_dim", "embed_dim"):
            if getattr(self, name) < 1:
                raise ConfigError(f"random_walk.train.{name} must be >= 1, got {getattr(self, name)}")
        if self.level_dim % 4:
            raise ConfigError(f"random_walk.train.level_dim must be a multiple of 4 (GroupNorm(4)), got {self.level_dim}")


class SeedPairs(torch.utils.data.Dataset):
    """(RGB image in [0, 1], stride-4 seed labels) of a split, flipped and cropped by (seed, epoch, index)."""

    def __init__(self, dataset: WeakDataset, cam_dir: Path, confident: tuple[float, float], crop_size: int,
                 seed: int) -> None:
        self.dataset, self.cam_dir, self.confident, self.crop_size, self.seed = dataset, cam_dir, confident, crop_size, seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.dataset.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        sample = self.dataset.samples[index]
        path = self.cam_dir / f"{sample.stem}.npz"
        cams, keys = load_cam(path)
        image = to_tensor(self.dataset.load_image(sample), ((0.0,) * 3, (1.0,) * 3))
        if cams.shape[1:] != image.shape[1:]:
            raise ScarceError(f"{path}: CAMs are {cams.shape[2]}x{cams.shape[1]} (WxH) but image "
                              f"{sample.image_path.name} is {image.shape[2]}x{image.shape[1]}")
        both = torch.cat([image, torch.from_numpy(cams)])
        rng = sample_generator(self.seed, self.epoch, index)
        if rng.random() < 0.5:
            both = both.flip(-1)
        height, width = both.shape[1:]
        top = int(rng.integers(0, max(height - self.crop_size, 0) + 1))
        left = int(rng.integers(0, max(width - self.crop_size, 0) + 1))
        both = both[:, top:top + self.crop_size, left:left + self.crop_size]
        labels = cams_to_confident_labels(to_grid(both[3:]).numpy(), keys, *self.confident)
        return both[:3], torch.from_numpy(labels).long()


def pad_batch(items: list[tuple[torch.Tensor, torch.Tensor]],
              size: tuple[int, int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Images of different sizes in one batch: padded with 0 at the bottom and right to ``size`` (height, width;
    default: the largest item's), their labels with 255."""
    height, width = size or (max(image.shape[1] for image, _ in items), max(image.shape[2] for image, _ in items))
    h, w = grid_size(height, width)
    images = torch.stack([F.pad(im, (0, width - im.shape[2], 0, height - im.shape[1])) for im, _ in items])
    labels = torch.stack([F.pad(lab, (0, w - lab.shape[1], 0, h - lab.shape[0]), value=IGNORE_INDEX) for _, lab in items])
    return images, labels


def train_affinity(net: AffinityNet, levels: BackboneLevels, pairs: SeedPairs, cfg: AffinityTrainConfig,
                   out_dir: Path, identity: dict, progress: bool = True,
                   on_epoch: Callable[[int], None] | None = None) -> Path:
    """Train ``net`` on the seed pairs; write ``affinity.pt`` in ``out_dir`` and return its path.

    A ``checkpoint.pt`` is written after every epoch and resumed from; ``identity`` (thresholds, split,
    backbone checksum, config) is stored in it, and a checkpoint made with another one is refused.
    ``on_epoch(epoch)`` runs after each epoch's checkpoint (tests use it to simulate a kill).

    Under torchrun every rank calls it with the same arguments and trains on its part of every global batch
    of ``batch_size`` pairs, as :func:`scarce.training.train_classifier` does: each rank pads its images to
    the size of the batch's largest crop (padding changes the embedding near the border), divides its pair
    sums by the pair counts of the whole batch (summed over ranks), and the gradients are summed over ranks,
    so N processes train the network of one process (to float tolerance). Nothing needs synced BN: the
    backbone is frozen in eval mode and the branch normalises with GroupNorm, per image. Rank 0 alone writes
    the checkpoints and ``affinity.pt``; a checkpoint resumes under any number of processes.
    """
    ckpt_path, final_path = out_dir / "checkpoint.pt", out_dir / "affinity.pt"
    if not len(pairs):
        raise ScarceError(f"{pairs.dataset.root}: split {pairs.dataset.split!r} has no samples to train the affinity network on")
    ranks = world()
    check_batch(cfg.batch_size, "random_walk.train.batch_size")
    steps_per_epoch = math.ceil(len(pairs) / cfg.batch_size)
    total_steps = cfg.epochs * steps_per_epoch
    optimizer = torch.optim.SGD(net.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    parameters = list(net.parameters())
    start_epoch = 0
    if ckpt_path.exists():
        state = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        check_identity(ckpt_path, state["identity"], identity)
        net.load_state_dict(state["net"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch = state["epoch"]
    barrier()  # every rank has read the checkpoint before rank 0 writes the next one (or affinity.pt)
    device = next(net.parameters()).device
    offsets = half_disc_offsets(cfg.radius)
    bar = tqdm(total=total_steps, initial=start_epoch * steps_per_epoch, desc="affinity", unit="step",
               disable=not (progress and ranks.is_main), leave=False)
    for epoch in range(start_epoch, cfg.epochs):
        pairs.epoch = epoch
        order = epoch_order(cfg.seed, epoch, len(pairs))
        net.train()
        for first in range(0, len(order), cfg.batch_size):
            step = epoch * steps_per_epoch + first // cfg.batch_size
            batch = order[first:first + cfg.batch_size]
            items = [pairs[i] for i in batch[batch_part(len(batch), ranks)]]  # this rank's part of the batch
            size = all_max(torch.tensor([max((image.shape[d] for image, _ in items), default=0) for d in (1, 2)]))
            for group in optimizer.param_groups:
                group["lr"] = poly_lr(cfg.lr, step, total_steps, cfg.poly_power)
            optimizer.zero_grad(set_to_none=True)
            if items:
                images, labels = pad_batch(items, (int(size[0]), int(size[1])))
                aff = pair_affinities(embed(net, levels, images.to(device)), offsets)
                masks = affinity_labels(labels.to(device), offsets)
                counts = pair_counts(*masks)
            else:  # the batch has fewer pairs than there are ranks
                counts = torch.zeros(3, device=device)
            counts = all_sum(counts)  # the whole batch's pairs of each group
            loss = torch.zeros(1, device=device)
            if items:
                loss = balanced_affinity_loss(aff, *masks, counts)
                loss.backward()
            batch_loss = float(sum_gradients(parameters, loss.detach().reshape(1))[0])  # the ranks' terms add up
            if not math.isfinite(batch_loss):
                raise TrainingError(f"affinity network: non-finite loss at epoch {epoch + 1}, step {step + 1}; "
                                    f"the last checkpoint ({ckpt_path}) is kept: lower random_walk.train.lr")
            optimizer.step()
            bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{batch_loss:.4f}")
        if ranks.is_main:
            save_torch(ckpt_path, {"net": net.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch + 1,
                                   "identity": identity})
        if on_epoch is not None:
            on_epoch(epoch + 1)
    bar.close()
    if ranks.is_main:
        save_torch(final_path, {"net": net.state_dict(), "identity": identity})
    barrier()  # affinity.pt is there before any rank goes on
    return final_path


def check_identity(path: Path, stored: dict, expected: dict) -> None:
    """Refuse weights learnt under other settings (another classifier, other thresholds or options)."""
    differ = sorted(k for k in stored.keys() | expected.keys() if stored.get(k) != expected.get(k))
    if differ:
        raise ConfigError(f"{path}: the affinity network there was trained with other settings ({', '.join(differ)}); "
                          "delete that folder to retrain it")


def training_identity(model: CamClassifier, cfg: AffinityTrainConfig, split: str, confident: tuple[float, float],
                      n_samples: int) -> dict:
    """What the learnt affinities depend on: the frozen backbone (by a checksum), the seeds and the options."""
    checksum = float(sum(p.detach().double().abs().sum() for p in model.backbone.parameters()))
    return {"train": asdict(cfg), "split": split, "confident": [float(c) for c in confident], "samples": n_samples,
            "backbone": f"{type(model.backbone).__name__}:{checksum:.10g}"}

