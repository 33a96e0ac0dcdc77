"""The CAM method family as plug-ins of the WSSS spine, one module per method.

Importing this package registers, with the spine's registries:

========== ====================================== ===================================================
module     training objective (``objective:``)    CAM method (``cam.method:``)
========== ====================================== ===================================================
recam      ``recam``: BCE + λ·SCE re-activation    ``recam``: CAM from W_recam ⊙ W_cls (``bind``)
lpcam      –                                      ``lpcam``: class/context prototypes (``prepare``)
puzzle     ``puzzle``: 2×2 tiles, merged-feature   – (ordinary CAM)
           classification, masked L1, α ramp
erasing    ``erasing``: OC-CSE class-specific      – (ordinary CAM)
           adversarial erasing, frozen classifier
advcam     –                                      ``advcam``: anti-adversarial climbing
rib        –                                      ``rib``: per-image fine-tuning with GNDP pooling
========== ====================================== ===================================================

Training-time and inference-time parts compose freely where the papers compose them (e.g. LPCAM or
AdvCAM on a ReCAM- or Puzzle-trained classifier): a run picks one objective and one CAM method.

A :class:`MethodConfig` (``configs/methods/*.yaml``) describes one method for the comparison benchmark:
where its classifier starts (``start_from``) and the run settings it changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from scarce.errors import ConfigError
from scarce.methods import advcam, erasing, lpcam, puzzle, recam, rib  # noqa: F401  (registration)
from scarce.methods.advcam import AdvCam, AdvcamOptions
from scarce.methods.erasing import ErasingObjective, erase, erasing_mask
from scarce.methods.lpcam import LpCam, LpcamOptions, Reservoir, cosine_kmeans, select_prototypes
from scarce.methods.puzzle import PuzzleObjective, merge, tile
from scarce.methods.recam import ReCam, ReCamObjective, class_features, normalized_cams
from scarce.methods.rib import Rib, RibOptions, gndp

START_FROM = ("imagenet", "cam", "none")
CAM_MODEL_PLACEHOLDER = "{cam_model}"


@dataclass(frozen=True)
class MethodConfig:
    """One method of the comparison.

    - ``start_from``: ``imagenet`` trains a classifier from the backbone's pretrained weights with ``run``'s
      objective; ``cam`` continues training the converged CAM classifier of the same seed (ReCAM's
      ``train_recam``); ``none`` reuses the CAM classifier as it is (inference-only methods).
    - ``run``: settings merged over the benchmark's base run config (keys of ``scarce.pipeline.RunConfig``).
      The string ``{cam_model}`` anywhere in ``run.objective_options`` is replaced by the path of the CAM
      classifier of the same seed (OC-CSE's frozen ordinary classifier).
    """

    name: str
    start_from: str = "imagenet"
    run: dict[str, Any] = field(default_factory=dict)
    description: str = ""

    def __post_init__(self) -> None:
        if self.start_from not in START_FROM:
            raise ConfigError(f"method {self.name}: start_from must be one of {START_FROM}, got {self.start_from!r}")
        if self.start_from == "none" and ("objective" in self.run or "train" in self.run):
            raise ConfigError(f"method {self.name}: start_from none reuses the CAM classifier; drop run.objective/train")


def substitute_cam_model(options: dict[str, Any], path: str) -> dict[str, Any]:
    return {k: (v.replace(CAM_MODEL_PLACEHOLDER, path) if isinstance(v, str) else v) for k, v in options.items()}


__all__ = [
    "AdvCam", "AdvcamOptions", "ErasingObjective", "erase", "erasing_mask", "LpCam", "LpcamOptions", "Reservoir",
    "cosine_kmeans", "select_prototypes", "PuzzleObjective", "merge", "tile", "ReCam", "ReCamObjective",
    "class_features", "normalized_cams", "Rib", "RibOptions", "gndp", "MethodConfig", "START_FROM",
    "substitute_cam_model",
]
