"""Affinity random walk (AffinityNet / IRN): CAMs propagated over learnt inter-pixel affinities.

The walk is IRN's ``make_sem_seg_labels`` + ``indexing.propagate_to_edge`` with AffinityNet's affinities
(``affinity.py``): on the stride-4 grid, ``A_ij = a_ij^β`` for ``|i − j| < radius`` (``a_ii = 1``, nothing
beyond the image), ``T = A D⁻¹`` (IRN divides by the column sums, ``D = diag(Σ_k A_kj)``), and the walked
map of a class is the row vector ``x T^t`` with ``t = 2^exp_times``. Since ``A`` is symmetric this is
``(D⁻¹A)^t`` applied to ``x``: every step replaces a pixel's score by the ``a^β``-weighted mean of its
neighbourhood. IRN squares the dense (HW)² matrix ``exp_times`` times; here the same ``t`` steps are
applied to ``x`` as in-place sums of shifted maps over the disc of offsets, so the memory is the
transition weights (one HW plane per offset: 69 for radius 5) and two copies of the maps instead of (HW)²
(``benchmarks/random_walk_memory.py`` measures it). Defaults are IRN's inference settings: radius 5,
β 10, exp_times 8 (t = 256).

Background. IRN walks the foreground CAMs only (no background plane: ``cam_dict['cam']`` holds the
image's classes), divides the upsampled result by its maximum over *all* classes and pixels, and then
prepends a constant background plane at ``sem_seg_bg_thres``. AffinityNet instead walks a background plane
``(1 − max_c CAM)^α`` along with the classes. The refiner interface returns foreground class maps and the
pipeline adds the background as a constant plane at a threshold chosen on val, which is IRN's rule, so
IRN's variant is the one implemented: the output is the walked foreground maps, upsampled ×4 (bilinear,
then cropped to the image, as IRN) and divided by their joint maximum (an image whose maps are all 0 stays
0). IRN also multiplies the CAMs by ``1 − boundary`` before the walk; AffinityNet has no boundary map, so
this step has no counterpart here.

The CAM enters the walk as its mean over each 4×4 cell (IRN resizes its stride-16 CAM to the stride-4 grid).

``prepare(context)`` needs from the :class:`~scarce.refinement.base.RefineContext`:

- ``model``: the trained ``CamClassifier`` (its backbone is frozen and read by hooks on timm's ``feature_info``);
- ``confident = (fg, bg)``: the seed thresholds chosen on val (required);
- ``datasets(train_split)`` and ``cam_dir(train_split)``: the training images and their seed CAMs;
- ``work_dir``: the network is kept in ``work_dir/random_walk/`` (``checkpoint.pt`` every epoch,
  ``affinity.pt`` when done); a finished network is loaded, an interrupted one resumed, and one trained
  with other settings (classifier, thresholds, options) is refused with the folder named.

Under ``torchrun`` the network's training is sharded (every rank trains on its part of each global batch,
see :func:`~scarce.refinement.affinity.train_affinity`) and reaches one process's weights to float
tolerance; the walk itself runs on the batches each rank refines.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from scarce.config import from_dict
from scarce.errors import ConfigError, ScarceError
from scarce.refinement.affinity import (STRIDE, AffinityNet, AffinityTrainConfig, BackboneLevels, SeedPairs,
                                        check_identity, disc_offsets, embed, grid_size, pair_affinities, to_grid,
                                        train_affinity, training_identity)
from scarce.refinement.base import RefineContext, Refiner, register_refiner


@dataclass(frozen=True)
class RandomWalkConfig:
    """Options of ``refine: [{random_walk: {...}}]``; the walk's defaults are IRN's inference settings."""

    radius: int = 5
    beta: float = 10.0
    exp_times: int = 8
    train: AffinityTrainConfig = field(default_factory=AffinityTrainConfig)

    def __post_init__(self) -> None:
        if self.radius < 1 or self.exp_times < 0 or self.beta <= 0:
            raise ConfigError(f"random_walk: radius must be >= 1, exp_times >= 0 and beta > 0; got radius={self.radius}, "
                              f"exp_times={self.exp_times}, beta={self.beta}")


def random_walk(cams: torch.Tensor, affinities: torch.Tensor, radius: int, beta: float, exp_times: int) -> torch.Tensor:
    """(B, K, h, w) maps walked ``2**exp_times`` steps of ``D⁻¹ A^β`` over the disc ``|o| < radius``.

    ``affinities`` is (B, len(disc_offsets(radius)), h, w): plane ``n`` holds ``a(i, i + o_n)``, 0 where
    ``i + o_n`` leaves the map, and 1 for the pixel itself (``pair_affinities`` gives exactly that). The
    images of a batch walk together: the cost of a step is one multiply-add per offset, whatever B and K.
    """
    offsets = disc_offsets(radius)
    batch, classes, height, width = cams.shape
    if affinities.shape != (batch, len(offsets), height, width):
        raise ValueError(f"affinities {tuple(affinities.shape)} do not match {len(offsets)} offsets and maps {tuple(cams.shape)}")
    weights = affinities ** beta
    weights /= weights.sum(dim=1, keepdim=True)
    reach = radius - 1
    padded = cams.new_zeros(batch, classes, height + 2 * reach, width + 2 * reach)  # x with a zero border
    centre = padded[..., reach:reach + height, reach:reach + width]
    # offsets as far as the map is wide or tall reach only the border: their weights are 0, skip them
    kept = [(weights[:, n:n + 1], dy, dx) for n, (dy, dx) in enumerate(offsets) if abs(dy) < height and abs(dx) < width]
    x = cams.clone()
    for _ in range(2 ** exp_times):
        centre.copy_(x)
        x.zero_()
        for plane, dy, dx in kept:  # x_i = Σ_o w_o(i) · x_{i+o}, in place: nothing of (HW)² or (2r−1)² × HW size
            x.addcmul_(padded[..., reach + dy:reach + dy + height, reach + dx:reach + dx + width], plane)
    return x


@register_refiner("random_walk")
class RandomWalkRefiner(Refiner):
    """CAMs walked over the affinities of a network trained on the train split's confident seeds."""

    shards_prepare = True  # under torchrun every rank trains on its part of each batch (train_affinity)

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        super().__init__(options)
        self.cfg = from_dict(RandomWalkConfig, self.options, "refine.random_walk")
        self.net: AffinityNet | None = None
        self.levels: BackboneLevels | None = None

    def prepare(self, context: RefineContext) -> None:
        """Load the affinity network from ``work_dir/random_walk``, or train it there (resuming a killed run).

        Under torchrun every rank calls it at once and takes part in the training; all ranks see the same
        ``affinity.pt`` (rank 0 writes it only after every rank has entered :func:`train_affinity`).
        """
        if context.confident is None:
            raise ConfigError("random_walk: the affinity network learns from confident seeds; RefineContext.confident "
                              "(fg, bg thresholds chosen on val) must be set")
        train = self.cfg.train
        levels = BackboneLevels(context.model)
        with torch.random.fork_rng(devices=[]):  # the branch's initial weights depend on the seed only
            torch.manual_seed(train.seed)
            net = AffinityNet(levels.channels, train.level_dim, train.embed_dim)
        net.to(next(context.model.parameters()).device)
        dataset = context.datasets(context.train_split)
        identity = training_identity(context.model, train, context.train_split, context.confident, len(dataset))
        out_dir = context.work_dir / self.name
        final = out_dir / "affinity.pt"
        if final.exists():
            state = torch.load(final, map_location="cpu", weights_only=True)
            check_identity(final, state["identity"], identity)
            net.load_state_dict(state["net"])
        else:
            pairs = SeedPairs(dataset, context.cam_dir(context.train_split), context.confident, train.crop_size, train.seed)
            train_affinity(net, levels, pairs, train, out_dir, identity, progress=context.progress)
        self.net, self.levels = net.eval(), levels

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, cams: Sequence[torch.Tensor],
                 keys: Sequence[Sequence[int]]) -> list[torch.Tensor]:
        if self.net is None or self.levels is None:
            raise ScarceError("random_walk: call prepare(context) first (it trains or loads the affinity network)")
        device = next(self.net.parameters()).device
        features = embed(self.net, self.levels, images.to(device))
        height, width = images.shape[-2:]
        for index, maps in enumerate(cams):
            if maps.shape[-2:] != (height, width):
                raise ValueError(f"maps of image {index} are {tuple(maps.shape[-2:])}, the images {(height, width)}")
        if not any(maps.shape[0] for maps in cams):
            return [maps.clone() for maps in cams]
        # the batch walks as one tensor: images with fewer classes are padded with zero maps, which stay 0
        stacked = features.new_zeros(len(cams), max(m.shape[0] for m in cams), *grid_size(height, width))
        for index, maps in enumerate(cams):
            stacked[index, :maps.shape[0]] = to_grid(maps.to(device, features.dtype))
        affinities = pair_affinities(features, disc_offsets(self.cfg.radius))
        walked = random_walk(stacked, affinities, self.cfg.radius, self.cfg.beta, self.cfg.exp_times)
        up = F.interpolate(walked, scale_factor=STRIDE, mode="bilinear", align_corners=False)[..., :height, :width]
        out = []
        for index, maps in enumerate(cams):
            own = up[index, :maps.shape[0]]
            peak = own.max() if maps.shape[0] else own.new_zeros(())
            refined = own / peak if peak > 0 else torch.zeros_like(own)  # IRN: over all classes and pixels
            out.append(refined.clamp(0.0, 1.0).to(maps))
        return out
