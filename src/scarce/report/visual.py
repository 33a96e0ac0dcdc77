"""Images for reports: coloured label maps, CAM heatmap overlays and labelled boxes (all ``uint8`` HxWx3)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

from scarce.io import IGNORE_INDEX as IGNORE_LABEL
from scarce.io import voc_palette

_WHITE = (255, 255, 255)


def _as_rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"image must be uint8, got {image.dtype}")
    if image.ndim == 2:
        return np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim == 3 and image.shape[2] == 3:
        return image
    raise ValueError(f"image must have shape (H, W) or (H, W, 3), got {image.shape}")


def colorize_labels(labels: np.ndarray, palette: np.ndarray | None = None) -> np.ndarray:
    """Colour a label map with ``palette`` (default VOC); the ignore label 255 is always white.

    White rather than VOC's cream makes the ignored band of confident seeds stand out against objects.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"label map must have shape (H, W), got {labels.shape}")
    colours = voc_palette() if palette is None else np.asarray(palette, dtype=np.uint8)
    if colours.ndim != 2 or colours.shape[1] != 3:
        raise ValueError(f"palette must have shape (N, 3), got {colours.shape}")
    table = np.zeros((IGNORE_LABEL + 1, 3), dtype=np.uint8)
    table[: min(len(colours), IGNORE_LABEL + 1)] = colours[: IGNORE_LABEL + 1]
    table[IGNORE_LABEL] = _WHITE
    labelled = labels[labels != IGNORE_LABEL]
    if labelled.size and (labelled.min() < 0 or labelled.max() >= min(len(colours), IGNORE_LABEL)):
        raise ValueError(f"labels {labelled.min()}..{labelled.max()} exceed the {len(colours)}-colour palette")
    return table[labels.astype(np.int64)]


def overlay_heatmap(image: np.ndarray, heat: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend a heatmap in [0, 1] (coloured with matplotlib's jet) over an image; ``alpha`` is the heat's weight."""
    from matplotlib import colormaps

    rgb = _as_rgb(image)
    heat = np.asarray(heat, dtype=np.float64)
    if heat.shape != rgb.shape[:2]:
        raise ValueError(f"heatmap shape {heat.shape} differs from image shape {rgb.shape[:2]}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    coloured = colormaps["jet"](np.clip(heat, 0.0, 1.0))[:, :, :3] * 255.0
    blended = (1.0 - alpha) * rgb + alpha * coloured
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def class_max_heat(maps: np.ndarray, image: np.ndarray) -> np.ndarray:
    """The heat of an image's (K, H, W) class maps: their max over the classes (zeros for an image with none)."""
    return maps.max(axis=0) if len(maps) else np.zeros(image.shape[:2], np.float32)


def draw_boxes(image: np.ndarray, boxes: Sequence[tuple[float, float, float, float, str]]) -> np.ndarray:
    """Draw boxes ``(x0, y0, x1, y1, label_text)`` (pixel corners, both inclusive) with their labels.

    Box i gets VOC colour i + 1, so neighbouring boxes differ; the label sits above the box when it fits,
    inside its top edge otherwise, and an empty label draws nothing.
    """
    canvas = Image.fromarray(_as_rgb(image).copy())
    draw = ImageDraw.Draw(canvas)
    palette = voc_palette()
    line_width = max(1, min(canvas.size) // 200)
    for index, (x0, y0, x1, y1, text) in enumerate(boxes):
        if x1 < x0 or y1 < y0:
            raise ValueError(f"box {index} has x1 < x0 or y1 < y0: {(x0, y0, x1, y1)}")
        colour = tuple(int(v) for v in palette[index % (IGNORE_LABEL - 1) + 1])
        draw.rectangle((x0, y0, x1, y1), outline=colour, width=line_width)
        if text:
            left, top, right, bottom = draw.textbbox((0, 0), text)
            text_height = bottom - top
            text_y = y0 - text_height - 2 if y0 - text_height - 2 >= 0 else y0 + line_width
            draw.rectangle((x0, text_y, x0 + right - left + 2, text_y + text_height + 1), fill=colour)
            draw.text((x0 + 1 - left, text_y - top), text, fill=_WHITE)
    return np.asarray(canvas)
