"""LPCAM (Chen et al., "Extracting Class Activation Maps from Non-Discriminative Features as well", CVPR'23).

A CAM method with state learned from the training split (``prepare``):

1. **Collect** last-layer features of the training images. For each positive class c of an image, a pixel is
   a *foreground* feature of c when the image's max-normalised CAM of c exceeds ``select_thres`` (0.1) and a
   *context* feature of c otherwise. Features are streamed batch by batch into a bounded reservoir sample per
   (class, kind) of at most ``max_features`` vectors, so memory is at most ``2 · C · max_features · D · 4``
   bytes whatever the split size (LPCAM keeps every feature map of the split in RAM, ≈9 GB on VOC).
2. **Cluster** each class's foreground and context features separately with cosine k-means (K = 12),
   k-means++ seeding, capped at ``max_iter`` iterations (LPCAM's ``kmeans_pytorch`` has no cap and diverges
   on background features, LPCAM issue #5) and stopped when no centre direction moves more than ``tol``.
   Centres are the mean raw features of their members (as ``kmeans_pytorch`` computes them).
3. **Select** prototypes with the classifier: p = softmax(centre · Wᵀ) over the C classes. Foreground
   centres with p_c > ``class_thres`` (0.9) are class prototypes; context centres with
   ``context_thres_low`` (0.05) < p_c < ``context_thres`` (0.9) are context prototypes. When no foreground
   centre passes, the one with the highest p_c is kept so that every seen class has a prototype.

Inference: ``LPCAM_c(x) = relu(mean_k cos(F(x), P_k) − mean_j cos(F(x), Q_j))`` for a class with context
prototypes, and ``mean_k cos(F(x), P_k)`` **without** the ReLU for a class without any (as LPCAM's
``make_lpcam``, whose ReLU sits inside ``if context_feature.shape[0] > 0``; :meth:`LpCam.rectify` tells the
core so). Similarities to all prototypes come from one normalised matmul, then the shared
multi-scale/flip/normalisation core. (LPCAM sums the features of the flipped pair before the cosine; here,
like every method, the maps of the pair are summed. LPCAM averages the scales where the core sums them,
which the max-normalisation makes the same.)

The foreground/context split uses the scale-1 CAM of the very forward pass that yields the features (LPCAM
uses the multi-scale IRN CAM resized to the feature grid), which saves a multi-scale pass over the split.

Several processes (``torchrun``): the collection is sharded like CAM extraction. The split's batches (runs
of equal-sized images, from the headers) are dealt round-robin, each rank computes the features of its
batches, and each round brings every rank's batch of feature rows and foreground masks to rank 0 in the
global batch order (:func:`scarce.distributed.gather_in_order`): the reservoir, whose sampling depends on
the order of the stream, receives exactly one process's stream, so the prototypes are bit-identical to one
process's (tested), and rank 0 holds at most one batch per rank besides the reservoir. Rank 0 clusters and
writes ``lpcam.pt``; the other ranks load it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from scarce.cams.base import CamConfig, CamMethod, register_cam_method
from scarce.config import from_dict
from scarce.data.base import same_size_groups
from scarce.distributed import barrier, gather_in_order, main_first, shard, world
from scarce.errors import ConfigError, ScarceError
from scarce.io import save_torch
from scarce.models.classifier import CamModel, class_maps
from scarce.training.transforms import to_tensor


@dataclass(frozen=True)
class LpcamOptions:
    k: int = 12
    select_thres: float = 0.1
    class_thres: float = 0.9
    context_thres_low: float = 0.05
    context_thres: float = 0.9
    max_features: int = 4096  # per (class, foreground|context) reservoir
    max_iter: int = 100
    tol: float = 1e-4
    seed: int = 0
    batch_size: int = 16


class Reservoir:
    """Bounded uniform samples of feature vectors per key (Vitter's algorithm R, vectorised per chunk).

    After n vectors were offered under one key, it holds min(n, capacity) of them, each of the n equally
    likely to be among them; memory never exceeds ``capacity · dim · 4`` bytes per key.
    """

    def __init__(self, capacity: int, dim: int, seed: int = 0) -> None:
        if capacity < 1:
            raise ValueError(f"reservoir capacity must be >= 1, got {capacity}")
        self.capacity, self.dim = capacity, dim
        self.rng = np.random.default_rng(seed)
        self.buffers: dict[Any, np.ndarray] = {}
        self.filled: dict[Any, int] = {}
        self.seen: dict[Any, int] = {}

    def add(self, key: Any, items: np.ndarray) -> None:
        items = np.asarray(items, dtype=np.float32).reshape(-1, self.dim)
        if key not in self.buffers:
            self.buffers[key] = np.empty((self.capacity, self.dim), dtype=np.float32)
            self.filled[key], self.seen[key] = 0, 0
        buffer, filled, seen = self.buffers[key], self.filled[key], self.seen[key]
        direct = min(self.capacity - filled, len(items))
        buffer[filled : filled + direct] = items[:direct]
        rest = items[direct:]
        if len(rest):
            positions = seen + direct + np.arange(len(rest))  # 0-based stream index of each item
            slots = self.rng.integers(0, positions + 1)  # uniform in [0, position]
            keep = np.flatnonzero(slots < self.capacity)
            if keep.size:
                # Sequential semantics: when several items hit one slot, the last one stays.
                reversed_slots = slots[keep][::-1]
                _, first = np.unique(reversed_slots, return_index=True)
                chosen = keep[::-1][first]
                buffer[slots[chosen]] = rest[chosen]
        self.filled[key] = filled + direct
        self.seen[key] = seen + len(items)

    def get(self, key: Any) -> np.ndarray:
        """The sample held for ``key`` ((0, dim) when nothing was offered)."""
        if key not in self.buffers:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self.buffers[key][: self.filled[key]]

    @property
    def nbytes(self) -> int:
        return sum(buffer.nbytes for buffer in self.buffers.values())


def cosine_kmeans(x: torch.Tensor, k: int, max_iter: int = 100, tol: float = 1e-4,
                  generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Cosine k-means of (n, D) vectors: (centres (k', D) as raw member means, labels (n,), iterations).

    k' = min(k, n). Assignment by the largest cosine similarity to a centre; k-means++ seeding on the cosine
    distance; an emptied cluster is re-seeded at the vector farthest from its centre. Stops after
    ``max_iter`` updates or when no centre direction moves more than ``tol`` (L2 between unit vectors).
    """
    if x.ndim != 2 or len(x) == 0:
        raise ValueError(f"k-means needs a non-empty (n, D) tensor, got shape {tuple(x.shape)}")
    x = x.float()
    unit = F.normalize(x, dim=1)
    k = min(k, len(x))
    chosen = [int(torch.randint(len(x), (1,), generator=generator))]
    best = unit @ unit[chosen[0]]
    for _ in range(1, k):
        distance = (1.0 - best).clamp_min(0.0) ** 2
        if float(distance.sum()) <= 0:
            pick = int(torch.randint(len(x), (1,), generator=generator))
        else:
            pick = int(torch.multinomial(distance, 1, generator=generator))
        chosen.append(pick)
        best = torch.maximum(best, unit @ unit[pick])
    centres = x[chosen].clone()
    labels = torch.zeros(len(x), dtype=torch.long)
    iterations = 0
    for iterations in range(1, max_iter + 1):
        similarity = unit @ F.normalize(centres, dim=1).T
        labels = similarity.argmax(dim=1)
        counts = torch.bincount(labels, minlength=k)
        sums = torch.zeros_like(centres).index_add_(0, labels, x)
        new = sums / counts.clamp_min(1).unsqueeze(1).to(x.dtype)
        empty = torch.nonzero(counts == 0).flatten()
        if empty.numel():
            fit = similarity.gather(1, labels[:, None])[:, 0]
            far = torch.argsort(fit)[: empty.numel()]
            new[empty] = x[far]
        shift = (F.normalize(new, dim=1) - F.normalize(centres, dim=1)).norm(dim=1).max()
        centres = new
        if float(shift) <= tol and not empty.numel():
            break
    labels = (unit @ F.normalize(centres, dim=1).T).argmax(dim=1)
    return centres, labels, iterations


def select_prototypes(centres: torch.Tensor, class_weights: torch.Tensor, class_index: int,
                      low: float, high: float | None, fallback_best: bool) -> torch.Tensor:
    """Centres whose classifier probability p_c = softmax(centre · Wᵀ)[c] lies in (low, high)."""
    if len(centres) == 0:
        return centres
    prob = torch.softmax(centres @ class_weights.T.to(centres), dim=1)[:, class_index]
    keep = prob > low
    if high is not None:
        keep &= prob < high
    if not keep.any() and fallback_best:
        keep = prob == prob.max()
    return centres[keep]


@register_cam_method("lpcam")
class LpCam(CamMethod):
    """Class and context prototypes: LPCAM_c = mean cos(F, class protos of c) − mean cos(F, context protos of c)."""

    shards_prepare = True  # every rank computes the features of its share of the batches (module docstring)

    def __init__(self, cfg: CamConfig, options: LpcamOptions | None = None) -> None:
        super().__init__(cfg)
        self.options = options or from_dict(LpcamOptions, dict(getattr(cfg, "options", {}) or {}), "cam.options")
        self.prototypes: dict[str, torch.Tensor] | None = None
        self.stats: dict[str, Any] = {}

    # -- fitting ------------------------------------------------------------------------------------
    def collect(self, model: CamModel, dataset) -> Reservoir | None:
        """Stream the split once into the per-class foreground/context reservoirs.

        Under torchrun each rank computes the batches :func:`~scarce.distributed.shard` deals it and rank 0
        receives them in the order of one process (:func:`~scarce.distributed.gather_in_order`): the
        reservoir, which rank 0 alone returns (None elsewhere), is the one a single process fills.
        """
        opts = self.options
        weights = model.class_weights.detach()
        device = weights.device
        batches = list(same_size_groups(dataset, opts.batch_size))

        @torch.no_grad()
        def pixels_of(batch: list) -> list[tuple[list[int], np.ndarray, np.ndarray]]:
            """Per image: its classes, its (h·w, D) feature rows and each class's (h·w,) foreground mask."""
            images = torch.stack([to_tensor(dataset.load_image(sample), model.mean_std) for sample in batch])
            features = model.features(images.to(device))
            cams = F.relu(class_maps(weights, features))
            cams = cams / (cams.amax(dim=(2, 3), keepdim=True) + 1e-5)
            return [(list(sample.labels), features[b].flatten(1).T.cpu().numpy(),
                     (cams[b, list(sample.labels)].flatten(1) > opts.select_thres).cpu().numpy())
                    for b, sample in enumerate(batch)]

        model.eval()
        stream = gather_in_order((pixels_of(batch) for batch in shard(batches)), len(batches))
        if not world().is_main:
            for _ in stream:  # takes part in every round; rank 0 receives the rows
                pass
            return None
        reservoir = Reservoir(opts.max_features, weights.shape[1], opts.seed)
        for images in stream:
            for labels, pixels, foreground in images:
                for c, mask in zip(labels, foreground):
                    reservoir.add((c, "fg"), pixels[mask])
                    reservoir.add((c, "context"), pixels[~mask])
        return reservoir

    def fit(self, model: CamModel, dataset) -> dict[str, torch.Tensor] | None:
        """Collect the features (every rank its share) and cluster them (rank 0, which alone returns the prototypes)."""
        reservoir = self.collect(model, dataset)
        return None if reservoir is None else self.cluster(model, reservoir)

    def cluster(self, model: CamModel, reservoir: Reservoir) -> dict[str, torch.Tensor]:
        """Cluster each class's foreground and context features and keep the centres the classifier selects."""
        opts = self.options
        weights = model.class_weights.detach().float().cpu()
        generator = torch.Generator().manual_seed(opts.seed)
        parts: dict[str, list[torch.Tensor]] = {"fg": [], "fg_owner": [], "context": [], "context_owner": []}
        stats: dict[str, Any] = {"peak_reservoir_bytes": reservoir.nbytes, "classes": {}}
        for c in range(weights.shape[0]):
            entry: dict[str, Any] = {}
            for kind, low, high, fallback in (("fg", opts.class_thres, None, True),
                                              ("context", opts.context_thres_low, opts.context_thres, False)):
                features = torch.from_numpy(reservoir.get((c, kind)).copy())
                entry[f"{kind}_features"] = int(reservoir.seen.get((c, kind), 0))
                if len(features) == 0:
                    entry[f"{kind}_prototypes"] = 0
                    continue
                centres, _, iterations = cosine_kmeans(features, opts.k, opts.max_iter, opts.tol, generator)
                kept = select_prototypes(centres, weights, c, low, high, fallback)
                parts[kind].append(kept)
                parts[f"{kind}_owner"].append(torch.full((len(kept),), c, dtype=torch.long))
                entry[f"{kind}_prototypes"], entry[f"{kind}_iterations"] = len(kept), iterations
            stats["classes"][c] = entry
        dim = weights.shape[1]
        self.prototypes = {
            "fg": torch.cat(parts["fg"]) if parts["fg"] else torch.zeros(0, dim),
            "fg_owner": torch.cat(parts["fg_owner"]) if parts["fg_owner"] else torch.zeros(0, dtype=torch.long),
            "context": torch.cat(parts["context"]) if parts["context"] else torch.zeros(0, dim),
            "context_owner": (torch.cat(parts["context_owner"]) if parts["context_owner"]
                              else torch.zeros(0, dtype=torch.long)),
            "num_classes": torch.tensor(weights.shape[0]),
        }
        self.stats = stats
        return self.prototypes

    def prepare(self, model: CamModel, train_set, work_dir: Path) -> None:
        """Fit the prototypes on ``train_set`` (cached in ``work_dir/lpcam.pt`` for this model and options).

        Under torchrun every rank calls it at once (``shards_prepare``): all take part in the collection,
        rank 0 clusters and writes the cache, and the other ranks then load it.
        """
        path = Path(work_dir) / "lpcam.pt"
        key = self._fingerprint(model)
        cached = self._load(path, key)
        barrier()  # every rank has looked at the cache before rank 0 may rewrite it: all take the same branch
        if cached:
            return
        fitted = self.fit(model, train_set)

        def save_or_load() -> None:
            if fitted is not None:
                save_torch(path, {"fingerprint": key, "prototypes": self.prototypes, "stats": self.stats})
            elif not self._load(path, key):
                raise ScarceError(f"{path}: rank 0 wrote LPCAM's prototypes there, but this process cannot read them; "
                                  "the run folder must be on a filesystem that every process of the job sees")

        main_first(save_or_load)

    def _load(self, path: Path, key: str) -> bool:
        """Take the prototypes of ``path`` when they were fitted for this model and these options."""
        if not path.is_file():
            return False
        saved = torch.load(path, map_location="cpu", weights_only=True)
        if saved.get("fingerprint") != key:
            return False
        self.prototypes, self.stats = saved["prototypes"], saved.get("stats", {})
        return True

    def _fingerprint(self, model: CamModel) -> str:
        digest = hashlib.sha1(model.class_weights.detach().float().cpu().numpy().tobytes()).hexdigest()
        return json.dumps({"options": asdict(self.options), "weights": digest}, sort_keys=True)

    # -- maps ---------------------------------------------------------------------------------------
    @staticmethod
    def averaging(owner: torch.Tensor, num_classes: int) -> torch.Tensor:
        """(C, P) matrix whose row c averages the prototypes owned by class c (zeros when it has none)."""
        matrix = torch.zeros(num_classes, len(owner))
        if len(owner):
            matrix[owner, torch.arange(len(owner))] = 1.0
            matrix = matrix / matrix.sum(dim=1, keepdim=True).clamp_min(1.0)
        return matrix

    def __call__(self, model: CamModel, images: torch.Tensor, classes: Sequence[int] | None = None) -> torch.Tensor:
        if self.prototypes is None:
            raise ConfigError("CAM method 'lpcam' has no prototypes: call prepare(model, train_set, work_dir) first")
        protos = self.prototypes
        num_classes = int(protos["num_classes"])
        features = F.normalize(model.features(images), dim=1)
        picked = list(range(num_classes)) if classes is None else list(classes)
        maps = features.new_zeros(features.shape[0], len(picked), *features.shape[-2:])
        for kind, sign in (("fg", 1.0), ("context", -1.0)):
            if len(protos[kind]) == 0:
                continue
            similarity = class_maps(F.normalize(protos[kind].to(features.device), dim=1), features)
            average = self.averaging(protos[f"{kind}_owner"], num_classes)[picked].to(features.device)
            maps = maps + sign * class_maps(average, similarity)
        return maps

    def rectify(self, maps: torch.Tensor, classes: Sequence[int] | None = None) -> torch.Tensor:
        """ReLU only the maps of classes that have context prototypes (LPCAM's ``make_lpcam``)."""
        if self.prototypes is None:
            raise ConfigError("CAM method 'lpcam' has no prototypes: call prepare(model, train_set, work_dir) first")
        num_classes = int(self.prototypes["num_classes"])
        has_context = torch.bincount(self.prototypes["context_owner"], minlength=num_classes) > 0
        picked = list(range(num_classes)) if classes is None else list(classes)
        return torch.where(has_context[picked][None, :, None, None], F.relu(maps), maps)
