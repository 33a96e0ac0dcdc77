"""The refinement interface: seed CAMs in, refined class maps out, one small module per method.

Every refiner sees a batch of same-sized images with the score maps of each image's labelled classes and
returns maps of the same shape, so refiners compose as a list (``refine: [pamr, crf]``) and the existing
threshold protocol (background plane at t, t chosen on val) scores their output unchanged:

- ``images``: (B, 3, H, W) float32 RGB in [0, 1] (not normalised: colour affinities read raw colour);
- ``cams``: one (K_i, H, W) float32 tensor in [0, 1] per image, the maps of its classes ``keys[i]``;
- output: the same list of shapes, values in [0, 1].

A refiner that learns something (the affinity network of the random walk) or reads the classifier (SCG's
backbone features) does so in :meth:`Refiner.prepare`, which receives a :class:`RefineContext`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Sequence

import torch

from scarce.distributed import prepare_on_ranks
from scarce.errors import ConfigError


@dataclass
class RefineContext:
    """What a refiner may read while preparing: the trained classifier, the splits and the seed CAMs."""

    model: torch.nn.Module  # the trained CamClassifier (eval mode); SCG reads its features
    datasets: Callable[[str], Any]  # split name -> WeakDataset
    cam_dir: Callable[[str], Path]  # split name -> folder of seed CAMs (``<stem>.npz``, see scarce.cams.store)
    work_dir: Path  # where the refiner keeps what it learns (checkpoints); resumable
    train_split: str = "train"
    val_split: str = "val"
    # chosen on val by the pipeline (never on the split being scored): the seeds' background threshold and the
    # confident (fg, bg) thresholds that trainable refiners (the affinity network) learn from
    threshold: float | None = None
    confident: tuple[float, float] | None = None
    progress: bool = True


class Refiner:
    """Refined maps of a batch; subclasses set ``name`` through :func:`register_refiner`."""

    name = "base"
    # under torchrun: prepare runs in every rank at once and splits its work itself (the random walk's
    # training); otherwise rank 0 prepares first and the other ranks after it (distributed.prepare_on_ranks)
    shards_prepare = False

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        self.options = dict(options or {})

    def prepare(self, context: RefineContext) -> None:
        """Fit or bind whatever the refiner needs (default: nothing)."""

    def __call__(self, images: torch.Tensor, cams: Sequence[torch.Tensor],
                 keys: Sequence[Sequence[int]]) -> list[torch.Tensor]:
        raise NotImplementedError


REFINERS: dict[str, type[Refiner]] = {}


def register_refiner(name: str) -> Callable[[type[Refiner]], type[Refiner]]:
    def add(cls: type[Refiner]) -> type[Refiner]:
        REFINERS[name] = cls
        cls.name = name
        return cls

    return add


@dataclass(frozen=True)
class RefineStep:
    """One entry of the ``refine:`` list: a registered name and its options."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)
    config_shorthand: ClassVar[str] = "name"  # scarce.config reads a bare string as ``{name: <string>}``


def build_refiner(step: RefineStep | str) -> Refiner:
    step = RefineStep(step) if isinstance(step, str) else step
    if step.name not in REFINERS:
        raise ConfigError(f"unknown refiner {step.name!r}; available: {', '.join(sorted(REFINERS)) or 'none'}")
    return REFINERS[step.name](step.options)


class RefinerChain(Refiner):
    """Refiners applied in order (``[pamr, crf]`` = CRF of the PAMR output)."""

    name = "chain"
    shards_prepare = True  # each refiner of the chain is prepared as it asks

    def __init__(self, steps: Sequence[RefineStep | str]) -> None:
        super().__init__()
        self.refiners = [build_refiner(step) for step in steps]

    def prepare(self, context: RefineContext) -> None:
        for refiner in self.refiners:
            prepare_on_ranks(refiner, context)

    def __call__(self, images: torch.Tensor, cams: Sequence[torch.Tensor],
                 keys: Sequence[Sequence[int]]) -> list[torch.Tensor]:
        out = list(cams)
        for refiner in self.refiners:
            out = refiner(images, out, keys)
        return out
