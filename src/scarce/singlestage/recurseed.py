"""RecurSeed (Jo, Yu & Kim, arXiv 2204.06754): the seeds, their confident labels and the losses of one step.

At every step, on the network's own outputs (seed ``001``):

    M_rs  = PAMR(SCG(M̂_cam), I)                      detached; the maps of the image's classes, 0 elsewhere
    M_seg = CF(M_rs)                                 argmax class + 1 where max_c M_rs > δ_fg, 0 below δ_bg, 255 between
    L     = L_cls(σ(GAP(M̂_cam)), Y) + L_seg(M̂_dec, M_seg) + L_rec(M̂_cam, M_rs)

and because the seeds are recomputed from the current network, the CAM trained towards M_rs(t) at epoch t is
the CAM that makes M_rs(t + 1): the recursion ``M_rs(t) ≈ M_cam(t + 1)`` needs no other machinery.

Facts and choices (the seed gives the formulas; the official repo releases inference only):

- M̂_cam in L_rec and under SCG is the max-normalised CAM, ReLU(cam − ε) / (max cam + ε) with ε = 1e-5
  (Puzzle-CAM's ``make_cam``, the same authors' code), resized to the image bilinearly, so that it is
  compared with seeds in [0, 1];
- δ_fg = 0.55 and δ_bg = 0.10 are the ``CF(c=0.55, u=0.10)`` of the official tag
  (``infer_rsepm.py``: ``ResNet50@RS(ep=5, cam=1.0, seg=1.0)+CF(c=0.55, u=0.10)+CM(ep=15, ...)``), and the
  weights of L_rec ("cam") and L_seg ("seg") are its 1.0;
- L_rec is Puzzle-CAM's "masking" reconstruction loss: |M̂_cam − M_rs| multiplied by the image-level label
  vector (only the image's classes count) and averaged over all B × C × H × W entries;
- L_seg is cross-entropy over the pixels CF labels (255 ignored), as the segmentation stage's loss;
- CF is :func:`scarce.pseudo.masks.cams_to_confident_labels` on the image's classes: a pixel whose best
  score equals δ_bg exactly counts as background there (the seed: 255), a difference of measure zero;
- SCG and PAMR are :mod:`scarce.refinement`'s (RecurSeed's thresholds 0.30 / 0.05 / 0.50 / 0.10, PAMR's
  official dilations, 10 iterations, σ 0.1), SCG on the encoder's C1–C5 of the same forward pass; either
  can be switched off for the seed's ablation (RS / +SCG / +PAMR / +SCG+PAMR); PAMR runs on the image at
  its training resolution.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from scarce.pseudo.masks import cams_to_confident_labels
from scarce.refinement.pamr import PamrRefiner
from scarce.refinement.scg import ScgRefiner

CAM_EPS = 1e-5  # Puzzle-CAM's make_cam


@dataclass(frozen=True)
class RecurSeedConfig:
    """RecurSeed's settings (the official tag's values; see the module docstring)."""

    fg_threshold: float = 0.55  # δ_fg of CF
    bg_threshold: float = 0.10  # δ_bg of CF
    use_scg: bool = True
    use_pamr: bool = True
    scg: dict[str, Any] = field(default_factory=dict)  # options of scarce.refinement's scg (RecurSeed's defaults)
    pamr: dict[str, Any] = field(default_factory=dict)  # options of scarce.refinement's pamr (official defaults)
    cls_weight: float = 1.0
    seg_weight: float = 1.0
    rec_weight: float = 1.0
    # epochs of L_cls alone before the seeds are used; 0 in the seed. A zero-initialised CAM head gives all-zero
    # seeds at step 0 (CF: all background), which L_seg and L_rec would then teach; 1-stage-wseg waits 5 epochs.
    seed_start_epoch: int = 0


def normalised_cams(cams: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """(B, C, h, w) raw CAMs → max-normalised maps in [0, 1] resized to ``size`` (keeps gradients)."""
    positive = F.relu(cams - CAM_EPS) / (cams.flatten(2).amax(dim=2)[..., None, None] + CAM_EPS)
    return F.interpolate(positive, size=tuple(size), mode="bilinear", align_corners=False)


def class_keys(labels: torch.Tensor) -> list[list[int]]:
    """(B, C) multi-hot image labels → the class indices of each image."""
    return [torch.nonzero(row > 0.5).flatten().tolist() for row in labels]


def scatter_classes(maps: Sequence[torch.Tensor], keys: Sequence[Sequence[int]], num_classes: int) -> torch.Tensor:
    """Per-image (K_i, H, W) maps of classes ``keys[i]`` → (B, C, H, W) with zeros for the other classes."""
    out = maps[0].new_zeros((len(maps), num_classes, *maps[0].shape[1:]))
    for i, (m, k) in enumerate(zip(maps, keys)):
        out[i, list(k)] = m
    return out


def confident_labels(maps: torch.Tensor, keys: Sequence[Sequence[int]], fg: float, bg: float) -> torch.Tensor:
    """CF of (B, C, H, W) class maps over each image's classes → (B, H, W) int64 (0 bg, c + 1, 255)."""
    rows = [cams_to_confident_labels(m[list(k)].detach().cpu().numpy(), np.asarray(k, dtype=np.int64), fg, bg)
            for m, k in zip(maps, keys)]
    return torch.from_numpy(np.stack(rows).astype(np.int64)).to(maps.device)


def masked_l1(predicted: torch.Tensor, target: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Puzzle-CAM's masked reconstruction loss: mean of |predicted − target| · label over (B, C, H, W)."""
    return ((predicted - target).abs() * labels[:, :, None, None]).mean()


class SeedMaker:
    """M_rs = PAMR(SCG(M̂_cam), I) of a batch, from the outputs of one forward pass."""

    def __init__(self, cfg: RecurSeedConfig) -> None:
        self.scg = ScgRefiner(cfg.scg) if cfg.use_scg else None
        self.pamr = PamrRefiner(cfg.pamr) if cfg.use_pamr else None

    @torch.no_grad()
    def __call__(self, rgb: torch.Tensor, cams: torch.Tensor, levels: Sequence[torch.Tensor],
                 keys: Sequence[Sequence[int]]) -> torch.Tensor:
        """(B, 3, H, W) RGB in [0, 1], (B, C, H, W) normalised CAMs, the encoder's levels → (B, C, H, W) seeds."""
        maps = [cam[list(k)].detach().float() for cam, k in zip(cams, keys)]
        if self.scg is not None:
            maps = self.scg.refine_features(self.scg.resize_levels(levels, rgb.shape[2:]), maps)
        if self.pamr is not None:
            maps = self.pamr(rgb.float(), maps, keys)
        return scatter_classes(maps, keys, cams.shape[1])


def to_rgb(images: torch.Tensor, mean_std: tuple[tuple[float, ...], tuple[float, ...]]) -> torch.Tensor:
    """Normalised (B, 3, H, W) images → RGB in [0, 1] (PAMR's colour affinities read raw colour)."""
    mean, std = (images.new_tensor(v).view(1, 3, 1, 1) for v in mean_std)
    return (images * std + mean).clamp(0.0, 1.0)
