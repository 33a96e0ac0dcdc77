"""Where every file of a WSSS run folder lives: the one place that spells out the paths.

    config.yaml                       resolved configuration (a folder holds one configuration)
    data/                             the generated scenes benchmark (data.kind = scenes without a root)
    train/{model.pt,checkpoint.pt,train_log.csv}
    cams/_prepare/                    what a CAM method fits on the training split (e.g. LPCAM's prototypes)
    cams/<split>/<stem>.npz           seed CAMs of the image's classes (scarce.cams.store)
    refine/                           work folder of trainable refiners (e.g. the affinity network)
    refined/<split>/<stem>.npz        refined maps, in the CAMs' format
    masks/<split>/<stem>.png          pseudo masks (VOC palette; 255 = ignore), with masks/<split>/_source.json
    segment/                          segmentation model: checkpoints and log
    segment/pred/<split>/<stem>.png   its predictions
    ceiling/                          the same model trained on ground-truth masks (fully supervised ceiling)
    scores/<name>.json                each scoring stage's result; merged into metrics.json
    timings.json                      seconds per stage, kept across resumed invocations
    metrics.json, report.html         the merged scores and the report
    compare.json                      the comparison's record of a finished method run (scarce compare)

A folder of per-image files is complete when it holds ``_complete`` (written atomically after its last
file), so a killed stage resumes image by image and a finished one is skipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from scarce.io import write_text

COMPLETE = "_complete"
MAP_KINDS = ("cams", "refined")  # per-image class maps, both in scarce.cams.store's format


@dataclass(frozen=True)
class RunLayout:
    """The paths of one run folder (see the module docstring)."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    # -- configuration, data, classifier -------------------------------------------------------------
    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def train(self) -> Path:
        return self.root / "train"

    @property
    def model(self) -> Path:
        return self.train / "model.pt"

    # -- per-image maps and masks --------------------------------------------------------------------
    @property
    def cam_prepare(self) -> Path:
        return self.root / "cams" / "_prepare"

    def cams(self, split: str) -> Path:
        return self.root / "cams" / split

    def refined(self, split: str) -> Path:
        return self.root / "refined" / split

    def maps(self, kind: str, split: str) -> Path:
        """``cams/<split>`` or ``refined/<split>``: the two folders of per-image class maps."""
        if kind not in MAP_KINDS:
            raise ValueError(f"map kind must be one of {MAP_KINDS}, got {kind!r}")
        return self.root / kind / split

    @staticmethod
    def map_file(folder: Path, stem: str) -> Path:
        return folder / f"{stem}.npz"

    def masks(self, split: str) -> Path:
        return self.root / "masks" / split

    @staticmethod
    def mask_file(folder: Path, stem: str) -> Path:
        return folder / f"{stem}.png"

    def mask_source(self, split: str) -> Path:
        """Which maps and thresholds made ``masks/<split>`` (its files are reused only for the same source)."""
        return self.masks(split) / "_source.json"

    # -- later stages --------------------------------------------------------------------------------
    @property
    def refine_work(self) -> Path:
        return self.root / "refine"

    @property
    def segment(self) -> Path:
        return self.root / "segment"

    def segment_pred(self, split: str) -> Path:
        return self.predictions(self.segment, split)

    @staticmethod
    def predictions(model_folder: Path, split: str) -> Path:
        """Label PNGs a segmentation model (``segment/`` or ``ceiling/``) predicted for a split."""
        return model_folder / "pred" / split

    @property
    def ceiling(self) -> Path:
        return self.root / "ceiling"

    # -- results -------------------------------------------------------------------------------------
    def scores(self, name: str) -> Path:
        return self.root / "scores" / f"{name}.json"

    @property
    def timings(self) -> Path:
        return self.root / "timings.json"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.json"

    @property
    def report(self) -> Path:
        return self.root / "report.html"

    @property
    def compare_record(self) -> Path:
        return self.root / "compare.json"


def is_complete(folder: Path) -> bool:
    return (folder / COMPLETE).is_file()


def mark_complete(folder: Path) -> None:
    write_text(folder / COMPLETE, "")


def clear_complete(folder: Path) -> None:
    (folder / COMPLETE).unlink(missing_ok=True)
