"""RIB (Lee et al., "Reducing Information Bottleneck for Weakly Supervised Semantic Segmentation", NeurIPS'21).

CAM method ``rib``: per-image fine-tuning of the trained classifier, then the CAMs of every fine-tuning step
are summed. For one image with classes K, starting each time from the trained weights, ``rib_iter`` (10)
SGD steps (poly decay; backbone lr ``rib_lr`` = 8e-6, classifier 10×, weight decay 1e-4) minimise

    L = − Σ_{views} Σ_{k∈K} GNDP_k(view) − Σ_b Σ_{k∈y_b} GNDP_k(disjoint image b),

a **raw logit** loss (no sigmoid, the bottleneck RIB removes) over the target image's views plus
``rib_batch`` (20) random training images sharing none of its classes. GNDP is global average pooling
restricted to the non-discriminative region: ``GNDP_k = mean_{x,y} M_k · 1[M_k / max M_k < score_th]``
(score_th 0.4; the mask is not differentiated). The returned map is the sum of ReLU'd CAMs of all steps.

One fine-tuning serves all the CAM scales (:meth:`Rib.views`), as ``obtain_RIB_CAM.py`` does:

- **Loss views**: every scale ≥ 1 × (image, flip); RIB's code leaves its 0.5 scale out of the loss (that
  scale only contributes maps). With CAM's scales that is 3 scales × 2 flips = 6 rows.
- **Stop rule**: after the step, stop when |Σ target GNDP logits over the loss views| > ``stop_th`` (600),
  RIB's ``target_loss`` over the same 6 rows. With other scales the sum has another number of rows n; it is
  compared as ``|sum| · 6 / n`` so that 600 keeps meaning 100 per view (the mean a row reaches).
- **Explode rule**: from the second step on, on the **flip-summed** ReLU'd map of scale 1.0 (of the first
  scale when 1.0 is absent), restricted to K and divided per class by its max (+1e-5): stop when more than
  ``explode_ratio`` (0.7) of the pixels exceed ``explode_th`` (0.3) for some class. As in RIB, the check
  comes right after that scale's map was added, so the scales before it in ``cam.scales`` (none with CAM's
  order 1.0, 0.5, 1.5, 2.0) count this step and the others do not.

``stop_th`` on another backbone: 600 is a raw-logit scale for IRN's ResNet-50 (6 rows, so 100 per view for
the image's classes together). The scale of a converged multi-label soft-margin classifier's logits is set
by the loss rather than by the backbone (the loss saturates at logits of a few units whatever the feature
width), and the GNDP logit of the non-discriminative region starts below the full logit; 600 is therefore
a guard against runaway logits in both settings, far above where fine-tuning starts, and it is kept (per
RIB's 6 rows) rather than re-tuned. Measured on the scenes benchmark (each image's steps and stop reason,
kept in its CAM file and gathered by `scarce compare` as ``image_notes``): it never fired. The explode rule,
on normalised maps, is scale-free, but not grid-free: on the benchmark's 8 × 8 maps of scenes with up to 3
large objects it ends about half of the images' fine-tuning at its first check, and on the 16 × 16 maps of
the partial-activation variant it never fired (docs/benchmarks.md, the CAM method family).

Deviations, for cost or from the toolkit's structure, all stated:

- ``tune: last_block`` (default) fine-tunes the backbone's last block and the classifier, with the input to
  that block computed once per view; ``tune: all`` fine-tunes every layer as RIB does. With RIB's learning
  rate the earlier layers barely move, and full fine-tuning costs ≈ 10 forward+backward passes of 26
  images per image.
- The disjoint images come from a pool of ``pool_images`` training images (resized to ``pool_size``, not
  re-augmented; RIB draws random 512-px crops), whose inputs to the tuned part are computed once in ``prepare``.
- SGD without momentum (RIB's PolyOptimizer passes weight decay as SGD's momentum, i.e. 1e-4).
- ``cam.batch_size`` must be 1 so that a call holds one image and the classes are its own.
- The disjoint images of an image are drawn from a generator seeded by ``seed`` and the image's name (given by
  the CAM writer, :meth:`Rib.begin_images`). ``obtain_RIB_CAM.py`` builds a shuffled loader per image from the
  process's global, unseeded random state, so its draws depend on the run and on what each GPU processed
  before. Here an image gets the same draws in a resumed run and on any rank under torchrun, so the CAM files
  do not depend on how the work was split. Called without a name (a direct call), one generator seeded with
  ``seed`` runs through the calls.
"""

from __future__ import annotations

import copy
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from scarce.cams.base import CamConfig, CamMethod, register_cam_method
from scarce.config import from_dict
from scarce.errors import ConfigError
from scarce.models.classifier import CamModel, class_maps, last_map

TUNE_MODES = ("last_block", "all")


@dataclass(frozen=True)
class RibOptions:
    rib_iter: int = 10
    rib_lr: float = 8e-6
    head_lr_mult: float = 10.0
    weight_decay: float = 1e-4
    poly_power: float = 0.9
    rib_batch: int = 20
    score_th: float = 0.4
    stop_th: float = 600.0
    explode_th: float = 0.3
    explode_ratio: float = 0.7
    tune: str = "last_block"
    pool_images: int = 256
    pool_size: int | None = None  # side of the pooled disjoint images; None: the first training image's size
    seed: int = 0


def gndp(maps: torch.Tensor, labels: torch.Tensor, score_th: float) -> torch.Tensor:
    """Pooling over the non-discriminative region: (N, C, h, w) maps, (N, C) multi-hot → (N, C) logits.

    For a labelled class the pixels whose map, divided by its max, is ≥ ``score_th`` are left out (the mask
    carries no gradient); other classes are plainly averaged. The sum is divided by all h·w pixels, as RIB does.
    """
    norm = (maps / maps.amax(dim=(2, 3), keepdim=True)).detach()
    norm = torch.where(labels[:, :, None, None] > 0, norm, torch.full_like(norm, -1.0))
    return (maps * (norm < score_th).to(maps.dtype)).mean(dim=(2, 3))


def split_features(model: CamModel, mode: str) -> tuple[Callable[[torch.Tensor], torch.Tensor], nn.Module,
                                                          Callable[[nn.Module, torch.Tensor], torch.Tensor]]:
    """(prefix, tail, run_tail): ``run_tail(tail, prefix(x))`` equals ``model.features(x)``."""
    if mode not in TUNE_MODES:
        raise ConfigError(f"rib: tune must be one of {TUNE_MODES}, got {mode!r}")
    backbone = getattr(model, "backbone", None)
    if backbone is None:
        raise ConfigError("rib: needs a CamClassifier (a timm backbone with a 1x1 classifier)")
    if mode == "all":
        return (lambda x: x), backbone, lambda tail, h: last_map(tail(h))
    if not all(hasattr(backbone, a) for a in ("conv_stem", "bn1", "blocks")):
        raise ConfigError("rib: tune 'last_block' needs a timm EfficientNet/MobileNet backbone; use tune: all")

    def prefix(x: torch.Tensor) -> torch.Tensor:
        x = backbone.bn1(backbone.conv_stem(x))
        for block in list(backbone.blocks)[:-1]:
            x = block(x)
        return x

    # with feature_layer "head" the CAM layer is after the 1×1 conv_head + BN: the tuned tail includes them
    head = [m for m in (getattr(backbone, "conv_head", None), getattr(backbone, "bn2", None)) if isinstance(m, nn.Module)]
    tail = nn.Sequential(backbone.blocks[-1], *head) if head else backbone.blocks[-1]
    return prefix, tail, lambda tail, h: tail(h)


RIB_LOSS_ROWS = 6  # obtain_RIB_CAM.py: target_loss over scales 1.0, 1.5, 2.0 × (image, flip)


def loss_views(scales: Sequence[float]) -> list[int]:
    """Indices of the scales whose views enter the loss and the stop rule: every scale ≥ 1 (RIB drops 0.5),
    or all of them when none is."""
    return [i for i, scale in enumerate(scales) if scale >= 1.0] or list(range(len(scales)))


def stop_value(target: float, rows: int) -> float:
    """|Σ target logits| over ``rows`` loss rows, on RIB's 6-row scale (compared with ``stop_th``)."""
    return abs(target) * RIB_LOSS_ROWS / max(rows, 1)


@register_cam_method("rib")
class Rib(CamMethod):
    needs_grad = True

    def __init__(self, cfg: CamConfig, options: RibOptions | None = None) -> None:
        super().__init__(cfg)
        self.options = options or from_dict(RibOptions, dict(getattr(cfg, "options", {}) or {}), "cam.options")
        if self.options.tune not in TUNE_MODES:
            raise ConfigError(f"rib: tune must be one of {TUNE_MODES}, got {self.options.tune!r}")
        if cfg.batch_size != 1:
            raise ConfigError("CAM method 'rib' fine-tunes per image: set cam.batch_size to 1")
        self.pool_inputs: torch.Tensor | None = None
        self.pool_labels: torch.Tensor | None = None
        self.rng = np.random.default_rng(self.options.seed)
        self.steps_taken: list[int] = []
        # per image, why fine-tuning ended: "explode", "stop_th" or "iterations" (rib_iter steps run)
        self.stop_reasons: list[str] = []
        self._noted = 0  # how many images take_notes has handed out

    def prepare(self, model: CamModel, train_set, work_dir: Path) -> None:
        """Pick the pool of candidate disjoint images and compute their inputs to the tuned part once."""
        from scarce.training.transforms import to_tensor

        opts = self.options
        prefix, _, _ = split_features(model, opts.tune)
        order = np.random.default_rng(opts.seed).permutation(len(train_set.samples))[: opts.pool_images]
        inputs, labels = [], []
        size: tuple[int, int] | None = (opts.pool_size, opts.pool_size) if opts.pool_size else None
        model.eval()
        with torch.no_grad():
            for start in range(0, len(order), 16):
                batch = []
                for index in order[start : start + 16]:
                    sample = train_set.samples[int(index)]
                    image = to_tensor(train_set.load_image(sample), model.mean_std)
                    size = size or tuple(image.shape[-2:])
                    if tuple(image.shape[-2:]) != size:
                        image = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False)[0]
                    batch.append(image)
                    labels.append(torch.from_numpy(train_set.label_vector(sample)))
                inputs.append(prefix(torch.stack(batch)))
        self.pool_inputs = torch.cat(inputs)
        self.pool_labels = torch.stack(labels)

    def __call__(self, model: CamModel, images: torch.Tensor, classes: Sequence[int] | None = None) -> torch.Tensor:
        """Fine-tune on one scale's views only (the core calls :meth:`views` with all scales at once)."""
        return self.views(model, [images], [1.0], classes)[0]

    def views(self, model: CamModel, views: Sequence[torch.Tensor], scales: Sequence[float],
              classes: Sequence[int] | None = None) -> list[torch.Tensor]:
        """One fine-tuning on all the scales' views; the summed maps of each scale's views."""
        opts = self.options
        if self.pool_inputs is None or self.pool_labels is None:
            raise ConfigError("CAM method 'rib' has no pool of disjoint images: call prepare(model, train_set, work_dir)")
        num_classes = model.class_weights.shape[0]
        picked = list(range(num_classes)) if classes is None else list(classes)
        prefix, tail, run_tail = split_features(model, opts.tune)
        with torch.no_grad():
            starts = [prefix(view.detach()) for view in views]
        if not picked:
            with torch.no_grad():
                return [view.new_zeros(len(view), 0, *run_tail(tail, start).shape[-2:]) for view, start in zip(views, starts)]
        tuned = copy.deepcopy(tail)
        for p in tuned.parameters():
            p.requires_grad_(True)
        weight = nn.Parameter(model.class_weights.detach().clone())
        groups = [(list(tuned.parameters()), opts.rib_lr), ([weight], opts.rib_lr * opts.head_lr_mult)]
        optimizer = torch.optim.SGD([{"params": params, "lr": lr, "base_lr": lr} for params, lr in groups if params],
                                    lr=opts.rib_lr, momentum=0.0, weight_decay=opts.weight_decay)
        target_labels = torch.zeros(num_classes)
        target_labels[picked] = 1.0
        in_loss = loss_views(scales)
        watched = list(scales).index(1.0) if 1.0 in scales else 0
        rows = sum(len(views[i]) for i in in_loss)
        disjoint = torch.nonzero((self.pool_labels[:, picked] == 0).all(dim=1)).flatten()
        totals: list[torch.Tensor | None] = [None] * len(views)
        steps, reason = 0, "iterations"
        tuned.eval()  # BatchNorm statistics stay frozen, as in RIB (IRN's frozen BN)
        for step in range(opts.rib_iter):
            for group in optimizer.param_groups:
                group["lr"] = group["base_lr"] * (1.0 - step / opts.rib_iter) ** opts.poly_power
            steps = step + 1
            target = weight.new_zeros(())
            exploded = False
            for i, start in enumerate(starts):
                maps = class_maps(weight, run_tail(tuned, start))
                current = F.relu(maps[:, picked]).detach()
                totals[i] = current if totals[i] is None else totals[i] + current
                if step > 0 and i == watched and self._exploded(current):
                    exploded = True
                    break
                if i in in_loss:
                    target = target + (gndp(maps, target_labels.expand(len(maps), -1), opts.score_th) * target_labels).sum()
            if exploded:
                reason = "explode"
                break
            loss = -target
            if len(disjoint) and opts.rib_batch > 0:
                chosen = disjoint[torch.from_numpy(self.rng.choice(len(disjoint), size=opts.rib_batch,
                                                                   replace=len(disjoint) < opts.rib_batch))]
                other = class_maps(weight, run_tail(tuned, self.pool_inputs[chosen]))
                other_labels = self.pool_labels[chosen]
                loss = loss - (gndp(other, other_labels, opts.score_th) * other_labels).sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if stop_value(float(target.detach()), rows) > opts.stop_th:
                reason = "stop_th"
                break
        self.steps_taken.append(steps)
        self.stop_reasons.append(reason)
        return [total for total in totals if total is not None]

    def begin_images(self, names: Sequence[str]) -> None:
        """Seed the draws of the disjoint images from ``seed`` and the image's name (one image per call)."""
        if len(names) == 1:
            self.rng = np.random.default_rng([self.options.seed, zlib.crc32(names[0].encode("utf-8"))])

    def take_notes(self) -> list[dict[str, Any]]:
        """``{"steps": n, "stop_reason": why}`` of each image fine-tuned since the last take."""
        notes = [{"steps": steps, "stop_reason": reason}
                 for steps, reason in zip(self.steps_taken[self._noted :], self.stop_reasons[self._noted :])]
        self._noted = len(self.steps_taken)
        return notes

    def _exploded(self, maps: torch.Tensor) -> bool:
        """RIB's explode rule on the flip-summed map: the share of pixels where some class exceeds explode_th of its max."""
        combined = maps[0] + maps[1].flip(-1) if self.cfg.flip and len(maps) == 2 else maps[0]
        norm = combined / (combined.amax(dim=(1, 2), keepdim=True) + 1e-5)
        covered = (norm > self.options.explode_th).any(dim=0).float().mean()
        return bool(covered > self.options.explode_ratio)
