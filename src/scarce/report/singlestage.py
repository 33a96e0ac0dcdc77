"""The HTML report of a single-stage run (RecurSeed ± a mixing method): protocol, the ladder of its outputs,
per-class IoU, the training losses and a gallery of test images.

Like :mod:`scarce.report.wsss` it never imports the pipeline: the run hands it the metrics, the training log
and the gallery's images.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from scarce.report.html import HtmlReport
from scarce.report.wsss import percent

NOT_LOSSES = ("epoch", "step", "lr")  # train_log.csv's other columns are the loss and its parts


def single_stage_ladder(metrics: dict[str, Any], splits: dict[str, str]) -> list[dict[str, object]]:
    """Rows seeds → decoder maps (= the multi-stage pseudo masks) → single-stage prediction → multi-stage model,
    each with the split that scored it and the split that chose its threshold (``–`` where nothing is chosen).

    ``splits`` maps the roles train / val / test to the run's split names."""
    train, val, test = splits["train"], splits["val"], splits["test"]
    seeds = metrics.get("seeds", {})
    rungs = [
        (f"seeds M_rs (threshold {seeds.get('threshold', float('nan')):.2f})", seeds.get(train), train, val),
        ("decoder maps on the image's classes = pseudo masks", metrics.get("decoder_maps"), train, "\u2013"),
        ("single stage: decoder", (metrics.get("single_stage") or {}).get(val), val, "\u2013"),
        ("single stage: decoder", (metrics.get("single_stage") or {}).get(test), test, "\u2013"),
        ("multi stage: segmentation model", (metrics.get("multi_stage") or {}).get(val), val, "\u2013"),
        ("multi stage: segmentation model", (metrics.get("multi_stage") or {}).get(test), test, "\u2013"),
    ]
    rows: list[dict[str, object]] = []
    for name, scores, scored_on, chosen_on in rungs:
        rows.append({"stage": name, **{column: percent(None if scores is None else scores[key])
                                       for column, key in (("mIoU", "miou"), ("FP (%)", "fp"), ("FN (%)", "fn"))},
                     "scored on": scored_on, "threshold chosen on": chosen_on})
    return rows


def loss_curves(log: Path) -> tuple[list[float], dict[str, list[float]]]:
    """(epochs, {column: values}) of a ``train_log.csv``; a part not yet trained in an epoch is NaN (a gap)."""
    with open(log, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        return [], {}
    columns = [name for name in rows[0] if name not in NOT_LOSSES]
    epochs = [float(row["epoch"]) for row in rows]
    return epochs, {name: [float(row[name]) if row[name] not in ("", None) else math.nan for row in rows]
                    for name in columns}


def write_single_stage_report(path: Path, metrics: dict[str, Any], description: str, splits: dict[str, str],
                              classes: Sequence[str], log: Path | None,
                              gallery: list[list[tuple[str, np.ndarray]]]) -> None:
    """report.html of a single-stage run; ``gallery`` rows are (caption, uint8 image) pairs, one row per image."""
    report = HtmlReport("scarce single-stage WSSS run", subtitle=str(path.parent))
    report.heading("Protocol")
    protocol = metrics.get("protocol", {})
    report.paragraph(description + " " + "; ".join(f"{name}: {text}" for name, text in protocol.items()) + ".")
    report.table(single_stage_ladder(metrics, splits), caption="Single stage and multi stage: mIoU (%)",
                 float_format="{:.1f}")
    test = (metrics.get("single_stage") or {}).get(splits["test"])
    if test is not None:
        # iou has background first, then the classes
        report.per_class_iou_table(["background", *classes], test["iou"],
                                   caption=f"Per-class IoU of the single-stage prediction on {splits['test']}")
    if log is not None and log.is_file():
        epochs, curves = loss_curves(log)
        if epochs:
            report.line_plot(epochs, curves, xlabel="epoch", ylabel="mean loss per step", title="Training losses",
                             integer_x=True)
    if gallery:
        columns = " | ".join(caption for caption, _ in gallery[0][1:])
        report.gallery(gallery, caption=f"{splits['test']} images: image | {columns}", width=192)
    report.save(path)
