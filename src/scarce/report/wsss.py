"""The HTML report of a WSSS run: protocol, the ladder, per-class IoU, threshold curves and a gallery of test images.

It reads only the run folder (:class:`scarce.layout.RunLayout`), the metrics and the test split, never the
pipeline, so that the pipeline can import it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from scarce.cams.store import load_cam
from scarce.data.base import WeakDataset
from scarce.io import read_label_png
from scarce.layout import RunLayout
from scarce.report.html import HtmlReport
from scarce.report.visual import class_max_heat, colorize_labels, overlay_heatmap

MISSING = "\u2014"  # a rung of the ladder that this run has not reached


def summary_rows(metrics: dict[str, Any]) -> list[dict[str, object]]:
    """One row per scored quantity, each with the split that chose its threshold and the split that scored it."""
    proto = metrics["protocol"]
    test = metrics["test"]
    oracle = metrics["test_oracle"]
    return [
        {"quantity": "CAM seed mIoU", "value": test["miou"], "threshold": metrics["threshold"],
         "threshold chosen on": proto["threshold_chosen_on"], "scored on": proto["scored_on"]},
        {"quantity": "FP (mean over classes)", "value": test["fp"], "threshold": metrics["threshold"],
         "threshold chosen on": proto["threshold_chosen_on"], "scored on": proto["scored_on"]},
        {"quantity": "FN (mean over classes)", "value": test["fn"], "threshold": metrics["threshold"],
         "threshold chosen on": proto["threshold_chosen_on"], "scored on": proto["scored_on"]},
        {"quantity": "oracle Peak IoU (reference only)", "value": oracle["peak_iou"], "threshold": oracle["threshold"],
         "threshold chosen on": proto["scored_on"] + " (oracle)", "scored on": proto["scored_on"]},
    ]


def _at(metrics: dict[str, Any], *keys: str) -> Any:
    """``metrics[k0][k1]...`` or None where a level is missing (a stage that did not run)."""
    node: Any = metrics
    for key in keys:
        if not isinstance(node, dict) or node.get(key) is None:
            return None
        node = node[key]
    return node


def percent(fraction: float | None) -> object:
    """A fraction as a percentage for the report's tables, or ``—`` for a rung the run has not reached."""
    return MISSING if fraction is None else 100 * float(fraction)


def ladder_rows(metrics: dict[str, Any]) -> list[dict[str, object]]:
    """The papers' ladder: seeds → refined maps → pseudo masks on train → segmentation → fully supervised ceiling.

    Every rung is an mIoU in percent (``—`` where the run has no such stage); the mask rung is scored on the
    train split the masks are made for ("mask mIoU (train)"), the others on test. Thresholds of seeds,
    refined maps and masks are chosen on val.
    """
    val, test = metrics["protocol"]["threshold_chosen_on"], metrics["protocol"]["scored_on"]
    train_split = _at(metrics, "masks", "train", "split") or "train"
    rungs = [  # (name, where its scores sit in metrics, scored on, threshold chosen on)
        ("CAM seeds", ("test",), test, val),
        ("refined maps", ("refined", "test"), test, val),
        ("pseudo masks: mask mIoU (train)", ("masks", "train"), train_split, val),
        ("segmentation", ("segmentation", "test"), test, "\u2013"),
        ("fully supervised ceiling", ("ceiling", "test"), test, "\u2013"),
    ]
    rows: list[dict[str, object]] = []
    for name, keys, scored_on, chosen_on in rungs:
        value, fp, fn = (_at(metrics, *keys, key) for key in ("miou", "fp", "fn"))
        rows.append({"stage": name, "mIoU": percent(value), "FP (%)": percent(fp), "FN (%)": percent(fn),
                     "scored on": scored_on, "threshold chosen on": chosen_on})
    weak, full = _at(metrics, "segmentation", "test", "miou"), _at(metrics, "ceiling", "test", "miou")
    ratio = 100 * float(weak) / float(full) if weak is not None and full else None
    rows.append({"stage": "segmentation / ceiling (%)", "mIoU": MISSING if ratio is None else ratio,
                 "FP (%)": MISSING, "FN (%)": MISSING, "scored on": test, "threshold chosen on": "\u2013"})
    return rows


def write_report(layout: RunLayout, metrics: dict[str, Any], description: str, dataset: WeakDataset,
                 gallery: int) -> None:
    """report.html of a run: ``description`` is the recipe in one sentence, ``dataset`` the scored test split."""
    val, test = metrics["protocol"]["threshold_chosen_on"], metrics["protocol"]["scored_on"]
    report = HtmlReport("scarce WSSS run", subtitle=str(layout.root))
    report.heading("Protocol")
    report.paragraph(
        f"{description} {metrics['protocol']['rule']}. The threshold is chosen on '{val}' and applied to "
        f"'{test}'; the oracle row uses the scored split's own ground truth."
    )
    report.table(summary_rows(metrics), caption="Summary")
    report.table(ladder_rows(metrics), caption="The ladder: mIoU (%) from seeds to a segmentation model",
                 float_format="{:.1f}")
    classes = metrics["classes"]
    report.per_class_iou_table(classes, metrics["test"]["iou"], caption=f"Per-class IoU on {test}")
    curves = {f"{val} mIoU": metrics["curves"]["val_miou"], f"{test} mIoU": metrics["curves"]["test_miou"]}
    markers = {f"chosen on {val}": (metrics["threshold"], metrics["test"]["miou"])}
    refined = metrics.get("refined")
    if refined:
        curves.update({f"{val} mIoU (refined)": refined["curves"]["val_miou"],
                       f"{test} mIoU (refined)": refined["curves"]["test_miou"]})
        markers[f"refined, chosen on {val}"] = (refined["threshold"], refined["test"]["miou"])
    report.line_plot(metrics["curves"]["thresholds"], curves, xlabel="background threshold", ylabel="mIoU",
                     title="mIoU versus background threshold", markers=markers)
    rows = gallery_rows(layout, dataset, gallery)
    columns = " | ".join(caption for caption, _ in rows[0][1:]) if rows else ""
    report.gallery(rows, caption=f"Test images: image | {columns}", width=192)
    report.save(layout.report)


def gallery_rows(layout: RunLayout, dataset: WeakDataset, count: int) -> list[list[tuple[str, np.ndarray]]]:
    """Image, ground truth, CAM, then the refined map, pseudo mask and segmentation where the run has them."""
    split = dataset.split
    refined, masks, segmented = layout.refined(split), layout.masks(split), layout.segment_pred(split)
    rows = []
    for sample in dataset.samples[:count]:
        image = dataset.load_image(sample)
        cams, keys = load_cam(layout.map_file(layout.cams(split), sample.stem))
        names = ", ".join(dataset.class_names[k] for k in keys)
        row = [(f"{sample.stem}: {names}", image), ("ground truth", colorize_labels(dataset.load_mask(sample))),
               ("CAM", overlay_heatmap(image, class_max_heat(cams, image)))]
        if refined.is_dir():
            maps, _ = load_cam(layout.map_file(refined, sample.stem))
            row.append(("refined", overlay_heatmap(image, class_max_heat(maps, image))))
        if masks.is_dir():
            row.append(("pseudo mask", colorize_labels(read_label_png(layout.mask_file(masks, sample.stem)))))
        if segmented.is_dir():
            row.append(("segmentation", colorize_labels(read_label_png(layout.mask_file(segmented, sample.stem)))))
        rows.append(row)
    return rows
