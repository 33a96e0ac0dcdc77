"""``scarce localize``: boxes and masks for anyone's photos from a classifier's CAMs.

For each image: the classifier's top-k classes (or the classes asked for), one CAM per class, and boxes
by the CAM paper's rule (binarise at ``threshold`` × the map's standard, box around the largest
connected component; ``rule="all"`` boxes every component). NWC, PaS (``normalize="percentile"``) and
every registered CAM method that needs no training data (:func:`localizable_methods`: not LPCAM, whose
prototypes come from a training split, RIB, which fine-tunes against training images, nor ReCAM, whose
head is trained with it) combine freely.

The model is any timm classifier (``weights``: ``auto`` = the offline ImageNet weights of
``tf_efficientnet_lite0``, ``hub``, or a checkpoint path) or a scarce checkpoint (``model.pt`` written by
training, recognised by its bias-free 1×1 classifier): the backbone name comes from ``model``, the class
names from the checkpoint's ``classes`` entry or a ``class_names`` file.

Outputs (``write_outputs``): ``localization.json`` (COCO style: ``images``, ``categories``,
``annotations`` with ``bbox`` [x, y, width, height], ``area``, uncompressed column-major RLE
``segmentation``, ``score``; plus ``skipped`` files with the reason) and ``report.html`` (overlays).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from scarce.cams import CAM_METHODS, CamConfig, CamExtractor, CamMethod, build_cam_method
from scarce.config import check_ranges
from scarce.data.base import read_class_names
from scarce.errors import ConfigError, DataError
from scarce.io import read_image, write_json
from scarce.localization.boxes import boxes_from_cam
from scarce.localization.classes import find_class, imagenet_classes
from scarce.models.nwc import with_nwc
from scarce.localization.rle import rle_encode
from scarce.models.classifier import CamModel, ModelConfig, TimmHeadClassifier, build_classifier
from scarce.models.weights import create_timm, load_checkpoint_state
from scarce.training import to_tensor

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif")


@dataclass(frozen=True)
class LocalizeConfig:
    model: str = "tf_efficientnet_lite0"
    weights: str | None = "auto"  # auto | hub | none | path to a timm or scarce checkpoint
    class_names: str | None = None  # file with one class name per line (scarce checkpoints without names)
    classes: tuple[str, ...] = ()  # names/indices to localize; empty: the top-k predicted classes
    top_k: int = 5
    method: str = "cam"
    layer: str | None = None
    nwc: bool = False
    normalize: str = "max"  # "percentile" = PaS
    percentile: float = 98.0
    threshold: float = 0.2  # fraction of the map's maximum (of its percentile under PaS), CAM paper: 20%
    rule: str = "largest"
    input_size: int = 224  # shorter side seen by the model
    max_side: int = 896  # cap of the longer side seen by the model
    scales: tuple[float, ...] = (1.0,)
    flip: bool = True
    report_side: int = 320  # longer side of the report's images

    def __post_init__(self) -> None:
        check_ranges(self)


@dataclass
class LoadedModel:
    model: CamModel
    class_names: tuple[str, ...]
    class_ids: tuple[str, ...] = ()
    multi_label: bool = False  # sigmoid scores (scarce classifiers) rather than softmax (timm heads)


@dataclass
class Detection:
    """One box of one class. Only compact data is kept, so that many large photos fit in memory:
    the mask as COCO RLE at the photo's size, the CAM at the model's input size."""

    class_index: int
    class_name: str
    score: float
    box: tuple[int, int, int, int] | None  # exclusive corners in the original image; None: empty map
    rle: dict[str, list[int]] | None
    area: int
    cam: np.ndarray = field(repr=False)


@dataclass
class ImageResult:
    path: Path
    width: int
    height: int
    detections: list[Detection]
    thumbnail: np.ndarray = field(repr=False)  # the photo at most ``report_side`` pixels long


def _is_scarce_checkpoint(state: dict[str, torch.Tensor]) -> bool:
    weight = state.get("classifier.weight")
    return weight is not None and weight.ndim == 4 and any(k.startswith("backbone.") for k in state)


def load_model(cfg: LocalizeConfig) -> LoadedModel:
    """The classifier and its class names, offline unless ``weights="hub"``."""
    weights = cfg.weights
    if weights not in (None, "auto", "hub", "none") and Path(str(weights)).is_file():
        state = load_checkpoint_state(weights)
        if _is_scarce_checkpoint(state):
            raw = torch.load(weights, map_location="cpu", weights_only=True)
            num_classes = int(state["classifier.weight"].shape[0])
            model = build_classifier(ModelConfig(backbone=cfg.model, pretrained=None), num_classes)
            try:
                model.load_state_dict(state)
            except RuntimeError as exc:
                raise ConfigError(f"{weights}: not a scarce checkpoint of {cfg.model} ({str(exc).splitlines()[0]})") from None
            names = _scarce_class_names(raw, cfg, num_classes, Path(str(weights)))
            return LoadedModel(model.eval(), names, multi_label=True)
        head = _head_size(cfg.model, state)
        net = create_timm(cfg.model, str(weights), num_classes=head) if head else create_timm(cfg.model, str(weights))
        return _timm_loaded(TimmHeadClassifier(net), cfg)
    if weights not in (None, "auto", "hub", "none"):
        raise ConfigError(f"{weights}: checkpoint not found (weights must be auto, hub, none or a file)")
    return _timm_loaded(TimmHeadClassifier(create_timm(cfg.model, weights)), cfg)


def _head_size(model_name: str, state: dict[str, torch.Tensor]) -> int | None:
    """Number of classes of a full timm checkpoint, read from its head's weight (None when not found)."""
    import timm

    probe = timm.create_model(model_name, pretrained=False, num_classes=1)
    head_names = [n for n, p in probe.named_parameters() if p.ndim == 2 and p.shape[0] == 1]
    for name in head_names:
        if name in state and state[name].ndim == 2:
            return int(state[name].shape[0])
    return None


def _scarce_class_names(raw: object, cfg: LocalizeConfig, num_classes: int, path: Path) -> tuple[str, ...]:
    if cfg.class_names:
        names = read_class_names(cfg.class_names)
    else:
        stored = raw.get("fingerprint", {}).get("classes") if isinstance(raw, dict) else None
        names = tuple(stored) if stored else tuple(f"class_{i}" for i in range(num_classes))
    if len(names) != num_classes:
        raise ConfigError(f"{path}: the model has {num_classes} classes but {len(names)} class names were given")
    return names


def _timm_loaded(model: TimmHeadClassifier, cfg: LocalizeConfig) -> LoadedModel:
    if cfg.class_names:
        names = read_class_names(cfg.class_names)
        ids: tuple[str, ...] = ()
    elif model.num_classes == 1000:
        names, ids = imagenet_classes()
    else:
        names, ids = tuple(f"class_{i}" for i in range(model.num_classes)), ()
    if len(names) != model.num_classes:
        raise ConfigError(f"the model has {model.num_classes} classes but {len(names)} class names were given")
    return LoadedModel(model.eval(), names, ids)


def expand_paths(paths: Sequence[str | Path]) -> list[Path]:
    """Files as given; a folder contributes its image files (by suffix, sorted, not recursive)."""
    out: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            out.extend(sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES))
        else:
            out.append(path)
    return out


def _model_input(image: np.ndarray, cfg: LocalizeConfig, mean_std: tuple[tuple[float, ...], tuple[float, ...]]
                 ) -> torch.Tensor:
    """(1, 3, h, w) at the shorter side ``input_size`` (longer side capped at ``max_side``)."""
    height, width = image.shape[:2]
    scale = min(cfg.input_size / min(height, width), cfg.max_side / max(height, width))
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    tensor = to_tensor(image, mean_std)[None]
    if size != (height, width):
        tensor = F.interpolate(tensor, size=size, mode="bilinear", align_corners=False, antialias=scale < 1)
    return tensor


def localizable_methods() -> tuple[str, ...]:
    """Registered CAM methods that work on a model alone: those that fit nothing on a training split
    (``prepare``) and bind no head trained with the classifier (``bind``)."""
    import scarce.methods  # noqa: F401  (registers the CAM method family)

    return tuple(sorted(name for name, cls in CAM_METHODS.items()
                        if getattr(cls, "prepare", None) is CamMethod.prepare and not hasattr(cls, "bind")))


class Localizer:
    """Model, CAM method and settings, loaded once and applied to any number of images."""

    def __init__(self, cfg: LocalizeConfig, loaded: LoadedModel | None = None) -> None:
        usable = localizable_methods()
        if cfg.method not in usable:
            why = ("needs training data or a head trained with the classifier" if cfg.method in CAM_METHODS
                   else "is not a registered CAM method")
            raise ConfigError(f"CAM method {cfg.method!r} {why}; localize accepts {', '.join(usable)}")
        self.cfg = cfg
        self.loaded = loaded or load_model(cfg)
        self.fixed = [find_class(q, self.loaded.class_names, self.loaded.class_ids) for q in cfg.classes]
        # NWC is applied to the model, so that every CAM method (Grad-CAM included) sees the clamped weights
        cam_cfg = CamConfig(method=cfg.method, scales=cfg.scales, flip=cfg.flip, normalize=cfg.normalize,
                            percentile=cfg.percentile, layer=cfg.layer)
        self.cam_model = with_nwc(self.loaded.model, cfg.nwc)
        self.extractor = CamExtractor(self.cam_model, cam_cfg, build_cam_method(cam_cfg))

    def __call__(self, path: str | Path) -> ImageResult:
        """Localize one image file; an unreadable file raises :class:`DataError` naming it."""
        image = read_image(path)
        height, width = image.shape[:2]
        x = _model_input(image, self.cfg, self.loaded.model.mean_std)
        with torch.no_grad():
            logits = self.loaded.model(x)[0].float()
        scores = torch.sigmoid(logits) if self.loaded.multi_label else torch.softmax(logits, dim=0)
        classes = self.fixed or torch.argsort(scores, descending=True)[: self.cfg.top_k].tolist()
        maps = self.extractor(x, classes)[0]
        detections = []
        for index, small in zip(classes, maps):
            # one class at a time at the photo's size: a 24-megapixel photo needs one map in memory, not k
            cam = F.interpolate(small[None, None], size=(height, width), mode="bilinear", align_corners=False)[0, 0]
            found = boxes_from_cam(cam.clamp_min(0.0).numpy(), self.cfg.threshold, self.cfg.rule)
            name, score = self.loaded.class_names[index], float(scores[index])
            if not found:
                detections.append(Detection(index, name, score, None, None, 0, small.numpy()))
            for box in found:
                detections.append(Detection(index, name, score, (box.x0, box.y0, box.x1, box.y1), rle_encode(box.mask),
                                            box.pixels, small.numpy()))
        return ImageResult(Path(path), width, height, detections, _thumbnail(image, self.cfg.report_side))


def localize(paths: Sequence[str | Path], cfg: LocalizeConfig = LocalizeConfig(),
             on_error: Callable[[Path, DataError], None] | None = None, progress: bool = False
             ) -> tuple[list[ImageResult], list[tuple[Path, str]], Localizer]:
    """Localize every image of ``paths`` (folders expanded); unreadable files (missing, corrupt, or so
    large that Pillow suspects a decompression bomb) are skipped and reported.

    Returns ``(results, skipped (path, reason), localizer)``.
    """
    localizer = Localizer(cfg)
    results, skipped = [], []
    for path in tqdm(expand_paths(paths), desc="localize", unit="image", disable=not progress, leave=False):
        try:
            results.append(localizer(path))
        except DataError as exc:
            skipped.append((path, exc.problem))
            if on_error is not None:
                on_error(path, exc)
    return results, skipped, localizer


def coco_json(results: list[ImageResult], skipped: list[tuple[Path, str]], localizer: Localizer) -> dict[str, object]:
    """COCO-style dictionary of the results (category ids are the model's class indices)."""
    cfg = localizer.cfg
    used = sorted({d.class_index for r in results for d in r.detections})
    images, annotations = [], []
    for image_id, result in enumerate(results, start=1):
        predictions = []
        seen: set[int] = set()
        for det in result.detections:
            if det.class_index not in seen:
                seen.add(det.class_index)
                predictions.append({"category_id": det.class_index, "name": det.class_name, "score": det.score})
            if det.box is None:
                continue
            x0, y0, x1, y1 = det.box
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id, "category_id": det.class_index,
                "category_name": det.class_name, "score": det.score, "bbox": [x0, y0, x1 - x0, y1 - y0],
                "area": det.area, "segmentation": det.rle, "iscrowd": 0,
            })
        images.append({"id": image_id, "file_name": str(result.path), "width": result.width,
                       "height": result.height, "classes": predictions})
    return {
        "info": {
            "description": "scarce localize: boxes and masks from class activation maps",
            "model": cfg.model, "weights": cfg.weights, "method": cfg.method, "nwc": cfg.nwc,
            "normalize": cfg.normalize, "percentile": cfg.percentile, "threshold": cfg.threshold,
            "rule": cfg.rule, "score": "sigmoid" if localizer.loaded.multi_label else "softmax",
            "bbox": "[x, y, width, height] in pixels of the original (EXIF-rotated) image",
            "segmentation": "uncompressed RLE, column-major, starting with a run of zeros (COCO)",
        },
        "categories": [{"id": i, "name": localizer.loaded.class_names[i]} for i in used],
        "images": images,
        "annotations": annotations,
        "skipped": [{"file_name": str(p), "error": reason} for p, reason in skipped],
    }


def _thumbnail(image: np.ndarray, side: int) -> np.ndarray:
    """The image scaled down (never up) so that its longer side is at most ``side``."""
    from PIL import Image

    height, width = image.shape[:2]
    scale = min(1.0, side / max(height, width))
    if scale == 1.0:
        return image
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))


def write_report(results: list[ImageResult], skipped: list[tuple[Path, str]], localizer: Localizer, path: Path) -> None:
    """One row per image: the photo with every box, then each class's CAM overlay with its box."""
    from scarce.report.html import HtmlReport
    from scarce.report.visual import draw_boxes, overlay_heatmap

    cfg = localizer.cfg
    report = HtmlReport("scarce localize", f"{cfg.model} · {cfg.method}{' + NWC' if cfg.nwc else ''} · "
                                           f"{'PaS' if cfg.normalize == 'percentile' else cfg.normalize} · "
                                           f"threshold {cfg.threshold} · rule {cfg.rule}")
    rows = []
    for result in results:
        small = result.thumbnail
        scale = small.shape[1] / result.width

        def scaled(box: tuple[int, int, int, int], text: str) -> tuple[float, float, float, float, str]:
            x0, y0, x1, y1 = box
            return (x0 * scale, y0 * scale, max(x0 * scale, x1 * scale - 1), max(y0 * scale, y1 * scale - 1), text)

        boxed = [scaled(d.box, f"{d.class_name.split(',')[0]} {d.score:.2f}") for d in result.detections if d.box]
        row = [(result.path.name, draw_boxes(small, boxed))]
        done: set[int] = set()
        for det in result.detections:
            if det.class_index in done:
                continue
            done.add(det.class_index)
            heat = F.interpolate(torch.from_numpy(det.cam)[None, None], size=small.shape[:2], mode="bilinear",
                                 align_corners=False)[0, 0].numpy()
            own = [scaled(d.box, "") for d in result.detections if d.class_index == det.class_index and d.box]
            row.append((f"{det.class_name.split(',')[0]} ({det.score:.2f})",
                        draw_boxes(overlay_heatmap(small, np.clip(heat, 0.0, 1.0)), own)))
        rows.append(row)
    if rows:
        report.gallery(rows)
    if skipped:
        report.heading("Skipped files")
        report.table([{"file": str(p), "reason": reason} for p, reason in skipped])
    report.save(path)


def write_outputs(results: list[ImageResult], skipped: list[tuple[Path, str]], localizer: Localizer,
                  out: str | Path) -> tuple[Path, Path]:
    """Write ``localization.json`` and ``report.html`` into ``out``; returns their paths."""
    out = Path(out)
    json_path, html_path = out / "localization.json", out / "report.html"
    write_json(json_path, coco_json(results, skipped, localizer))
    write_report(results, skipped, localizer, html_path)
    return json_path, html_path


__all__ = ["LocalizeConfig", "Localizer", "LoadedModel", "Detection", "ImageResult", "load_model", "localize",
           "coco_json", "write_report", "write_outputs", "expand_paths", "localizable_methods", "IMAGE_SUFFIXES"]
