"""The training step of the single-stage network: RecurSeed's losses, plus a mixing method's on mixed pairs.

    L = L_cls + L_seg + L_rec                                     (RecurSeed, :mod:`.recurseed`)
      + L_seg^mix(M̂_dec^mix, M_seg^mix) + L_rec^mix(M̂_cam^mix, M_rs^mix)   (from ``mix.start_epoch`` on, :mod:`.mixing`)

The mixed batch is a second forward pass of the same network on I_mix = {I_{i→j}}; no classification loss
is taken on it (the seed adds only the two mixed losses). L_rec^mix counts the classes of both images of a
pair. Random draws (partners, boxes, classes) come from torch's RNG, which the trainer seeds per step, so a
resumed run draws the same pairs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from scarce.errors import ConfigError
from scarce.refinement.pamr import PamrRefiner, pamr
from scarce.segmentation.train import labelled_cross_entropy
from scarce.singlestage.mixing import (MIXES, classmix_masks, cutmix_boxes, edge_predict, foreground_union, mix,
                                       partners, restricted_softmax)
from scarce.singlestage.network import SingleStageNet
from scarce.singlestage.recurseed import (RecurSeedConfig, SeedMaker, class_keys, confident_labels, masked_l1,
                                          normalised_cams, to_rgb)
from scarce.training.losses import Objective


@dataclass(frozen=True)
class MixConfig:
    """Which pairs to mix and from when. ``kind``: none | epm | cutmix | classmix."""

    kind: str = "none"
    # the official tag trains RS for 5 epochs, then mixing ("CertainMix", EPM's first name) for 15: RS(ep=5)+CM(ep=15)
    start_epoch: int = 5
    seg_weight: float = 1.0
    rec_weight: float = 1.0
    canny_sigma: float = 1.0  # skimage's default
    canny_low: float = 0.1  # hysteresis thresholds on the gradient of a probability plane
    canny_high: float = 0.2

    def __post_init__(self) -> None:
        if self.kind not in MIXES:
            raise ConfigError(f"mix.kind must be one of {', '.join(MIXES)}, got {self.kind!r}")
        if not 0.0 <= self.canny_low <= self.canny_high:
            raise ConfigError(f"mix: need 0 ≤ canny_low ≤ canny_high, got {self.canny_low}, {self.canny_high}")


def current_epoch(progress: float, epochs: int) -> int:
    """The epoch of a step from the trainer's progress (step / total steps), exact for any realistic epoch length."""
    return int(progress * epochs + 1e-6)


class SingleStageObjective(Objective):
    name = "recurseed"

    def __init__(self, rs: RecurSeedConfig, mixing: MixConfig, epochs: int) -> None:
        super().__init__()
        if not 0.0 <= rs.bg_threshold <= rs.fg_threshold <= 1.0:
            raise ConfigError(f"recurseed: need 0 ≤ bg_threshold ≤ fg_threshold ≤ 1, got {rs.bg_threshold}, "
                              f"{rs.fg_threshold}")
        self.rs, self.mixing, self.epochs = rs, mixing, epochs
        self.seeds = SeedMaker(rs)
        self.decoder_pamr = PamrRefiner(rs.pamr)  # M_dec = PAMR(D(E(I))) whatever the RS ablation uses

    def forward(self, model: SingleStageNet, images: torch.Tensor, labels: torch.Tensor,
                progress: float) -> tuple[torch.Tensor, dict[str, float]]:
        out = model(images)
        l_cls = F.multilabel_soft_margin_loss(out.logits, labels)
        loss = self.rs.cls_weight * l_cls
        parts = {"cls": float(l_cls.detach())}
        epoch = current_epoch(progress, self.epochs)
        if epoch < self.rs.seed_start_epoch:
            return loss, parts
        size = images.shape[-2:]
        keys = class_keys(labels)
        rgb = to_rgb(images, model.mean_std)
        cams = normalised_cams(out.cams, size)
        seeds = self.seeds(rgb, cams.detach(), out.levels, keys)
        targets = confident_labels(seeds, keys, self.rs.fg_threshold, self.rs.bg_threshold)
        l_seg = labelled_cross_entropy(out.seg_logits, targets)
        l_rec = masked_l1(cams, seeds, labels)
        loss = loss + self.rs.seg_weight * l_seg + self.rs.rec_weight * l_rec
        parts.update(seg=float(l_seg.detach()), rec=float(l_rec.detach()))
        if self.mixing.kind == "none" or epoch < self.mixing.start_epoch:
            return loss, parts
        fg, mixed_source = self.mix_masks(rgb, out.seg_logits.detach(), keys)
        pair = partners(len(images))
        out_mix = model(mix(images, fg, pair))
        l_seg_mix = labelled_cross_entropy(out_mix.seg_logits, mix(mixed_source, fg, pair))
        either = ((labels + labels[pair]) > 0).to(labels.dtype)
        l_rec_mix = masked_l1(normalised_cams(out_mix.cams, size), mix(seeds, fg, pair), either)
        loss = loss + self.mixing.seg_weight * l_seg_mix + self.mixing.rec_weight * l_rec_mix
        parts.update(seg_mix=float(l_seg_mix.detach()), rec_mix=float(l_rec_mix.detach()))
        return loss, parts

    @torch.no_grad()
    def mix_masks(self, rgb: torch.Tensor, seg_logits: torch.Tensor,
                  keys: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """(M_fg (B, H, W) in {0, 1}, the label maps to mix (B, H, W)) of the configured mixing method."""
        p = self.decoder_pamr
        probs = pamr(rgb.float(), restricted_softmax(seg_logits.float(), keys), p.dilations, p.iterations, p.sigma)
        rs, m = self.rs, self.mixing
        if m.kind == "epm":
            ep = torch.from_numpy(np.stack([edge_predict(x.cpu().numpy(), m.canny_sigma, m.canny_low, m.canny_high)
                                            for x in probs])).to(probs.device)
            return foreground_union(ep[:, 1:], rs.fg_threshold), \
                confident_labels(ep[:, 1:], keys, rs.fg_threshold, rs.bg_threshold)
        source = confident_labels(probs[:, 1:], keys, rs.fg_threshold, rs.bg_threshold)
        if m.kind == "cutmix":
            return cutmix_boxes(*source.shape).to(probs.device), source
        return classmix_masks(probs.argmax(dim=1).cpu()).to(probs.device), source
