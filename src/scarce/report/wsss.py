"""The HTML report of a WSSS run: protocol, per-class IoU, threshold curves and a gallery of test images."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from scarce.cams.store import load_cam
from scarce.io import read_label_png
from scarce.report.html import HtmlReport
from scarce.report.visual import colorize_labels, overlay_heatmap

if TYPE_CHECKING:
    from scarce.pipeline import Run


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


def write_report(run: "Run", metrics: dict[str, Any]) -> None:
    cfg = run.cfg
    report = HtmlReport("scarce WSSS run", subtitle=str(run.folder))
    report.heading("Protocol")
    report.paragraph(
        f"Classifier {cfg.model.backbone} (pretrained: {cfg.model.pretrained}), objective {cfg.objective}, "
        f"CAM method {cfg.cam.method}, scales {list(cfg.cam.scales)}, flip {cfg.cam.flip}, "
        f"normalisation {cfg.cam.normalize}. {metrics['protocol']['rule']}. "
        f"The threshold is chosen on '{metrics['protocol']['threshold_chosen_on']}' and applied to "
        f"'{metrics['protocol']['scored_on']}'; the oracle row uses the scored split's own ground truth."
    )
    report.table(summary_rows(metrics), caption="Summary")
    classes = metrics["classes"]
    report.table([{"class": name, "IoU": iou} for name, iou in zip(classes, metrics["test"]["iou"])],
                 caption=f"Per-class IoU on {metrics['protocol']['scored_on']}")
    curves = metrics["curves"]
    report.line_plot(
        curves["thresholds"],
        {f"{cfg.data.val_split} mIoU": curves["val_miou"], f"{cfg.data.test_split} mIoU": curves["test_miou"]},
        xlabel="background threshold", ylabel="mIoU", title="mIoU versus background threshold",
        markers={f"chosen on {cfg.data.val_split}": (metrics["threshold"], metrics["test"]["miou"])},
    )
    report.gallery(gallery_rows(run, cfg.data.test_split, cfg.eval.gallery),
                   caption="Test images: image | ground truth | CAM (max over the image's classes) | pseudo mask",
                   width=192)
    report.save(run.folder / "report.html")


def gallery_rows(run: "Run", split: str, count: int) -> list[list[tuple[str, np.ndarray]]]:
    dataset = run.dataset(split, allow_empty=True)
    rows = []
    for sample in dataset.samples[:count]:
        image = dataset.load_image(sample)
        cams, keys = load_cam(run.folder / "cams" / split / f"{sample.stem}.npz")
        heat = cams.max(axis=0) if len(cams) else np.zeros(image.shape[:2], np.float32)
        names = ", ".join(dataset.class_names[k] for k in keys)
        pseudo = read_label_png(run.folder / "masks" / split / f"{sample.stem}.png")
        rows.append([
            (f"{sample.stem}: {names}", image),
            ("ground truth", colorize_labels(dataset.load_mask(sample))),
            ("CAM", overlay_heatmap(image, heat)),
            ("pseudo mask", colorize_labels(pseudo)),
        ])
    return rows
