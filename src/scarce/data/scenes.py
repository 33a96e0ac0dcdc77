"""The built-in WSSS benchmark: real Fashion-MNIST objects pasted on real photos/textures, in PASCAL VOC layout.

Why a generator: it gives exact masks and boxes (the mask is exactly what was pasted), controllable
occlusion, and a *measurable* context bias. Class ``k`` has a preferred background texture (``k mod T``);
with probability ``cooccurrence`` an image is drawn on the preferred texture of its first object's class,
so a classifier can score well by looking at the background, the failure WSSS methods fight.

With ``part_size > 0`` every object also carries its class's *emblem*: a fixed black-and-white 5x5 glyph
stamped inside the object (part of its mask). The emblem names the class more reliably than the garment's
shape, so a classifier comes to rely on it and CAM lights that small part rather than the whole object:
the partial-activation failure of large VOC objects (a dog's face rather than the dog), which AdvCAM, RIB,
Puzzle-CAM and class-specific erasing are built to fix. Fashion-MNIST shapes are themselves easy to
recognise, so ``shape_noise`` redraws an object's class at random with that probability: its garment then
tells the class only weakly (as a dog's fur does) and the emblem strongly (as its face does).

Every image has its own random stream (seeded by ``(seed, image index)``), so a seed gives byte-identical
files. Train scenes take their objects from Fashion-MNIST's train split, val/test scenes from its test
split, so no object instance is shared between training and evaluation.
"""

from __future__ import annotations

import colorsys
import dataclasses
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage
from tqdm import tqdm

from scarce.data.base import IGNORE_INDEX, WeakDataset, save_label_png
from scarce.data.fashion_mnist import CLASS_NAMES, FashionMNIST, load_fashion_mnist
from scarce.data.voc import CLASS_NAMES_FILE, load_voc
from scarce.errors import ConfigError
from scarce.io import save_image, write_json, write_text

# Backgrounds bundled with scikit-image (no download). Grey textures get a fixed tint so that grass looks
# like grass; the others are colour photos.
TEXTURES: tuple[str, ...] = (
    "grass", "gravel", "brick", "moon", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry",
)
_GREY_TINTS: dict[str, tuple[float, float, float]] = {
    "grass": (0.55, 0.85, 0.35),
    "gravel": (0.85, 0.78, 0.65),
    "brick": (0.95, 0.55, 0.45),
    "moon": (0.80, 0.80, 0.88),
}
ITEM_THRESHOLD = 30  # upscaled Fashion-MNIST intensity above which a pixel belongs to the object
PLACEMENT_TRIES = 30  # positions tried per object before it is left out for violating the occlusion bound
COMPOSE_TRIES = 20  # scenes redrawn when every object vanished under the ignore band
GLYPH_CELLS = 5  # an emblem is a GLYPH_CELLS x GLYPH_CELLS binary pattern, one per class
_GLYPH_SEED = 20211  # fixed: a class's emblem is the same in every benchmark seed and split
SPLITS = ("train", "val", "test")
_SPLIT_STREAM, _IMAGE_STREAM, _PART_STREAM = 0, 1, 2


@dataclass
class ScenesConfig:
    """Settings of the generated benchmark (scales are fractions of the image side)."""

    n: int = 600
    seed: int = 0
    image_size: int = 160
    min_objects: int = 1
    max_objects: int = 3
    scale_range: tuple[float, float] = (0.35, 0.75)
    occlusion: float = 0.3
    cooccurrence: float = 0.7
    split_fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)
    ignore_width: int = 1
    subset: bool | None = None
    part_size: float = 0.0  # emblem side as a fraction of the object's side; 0 = no emblem
    shape_noise: float = 0.0  # probability that an object's class is redrawn at random (needs emblems)

    def __post_init__(self) -> None:
        self.scale_range = tuple(self.scale_range)  # type: ignore[assignment]
        self.split_fractions = tuple(self.split_fractions)  # type: ignore[assignment]
        low, high = self.scale_range
        problems = [
            (self.n < 1, f"n must be >= 1, got {self.n}"),
            (self.seed < 0, f"seed must be >= 0, got {self.seed}"),
            (not 1 <= self.min_objects <= self.max_objects, "need 1 <= min_objects <= max_objects"),
            (not 0 < low <= high <= 1, f"scale_range must satisfy 0 < low <= high <= 1, got {self.scale_range}"),
            (round(low * self.image_size) < 8, "the smallest object (scale_range[0] * image_size) must be >= 8 px"),
            (not 0 <= self.occlusion <= 1, f"occlusion must be in [0, 1], got {self.occlusion}"),
            (not 0 <= self.cooccurrence <= 1, f"cooccurrence must be in [0, 1], got {self.cooccurrence}"),
            (len(self.split_fractions) != 3 or min(self.split_fractions) < 0
             or abs(sum(self.split_fractions) - 1) > 1e-6, "split_fractions must be 3 non-negative numbers summing to 1"),
            (self.ignore_width < 0, f"ignore_width must be >= 0, got {self.ignore_width}"),
            (not 0 <= self.part_size < 1, f"part_size must be in [0, 1), got {self.part_size}"),
            (not 0 <= self.shape_noise <= 1, f"shape_noise must be in [0, 1], got {self.shape_noise}"),
            (self.shape_noise > 0 and self.part_size == 0, "shape_noise needs part_size > 0: the emblem must tell the class"),
            (0 < self.part_size and round(self.part_size * low * self.image_size) < GLYPH_CELLS,
             f"the smallest emblem (part_size * scale_range[0] * image_size) must be >= {GLYPH_CELLS} px"),
        ]
        for failed, message in problems:
            if failed:
                raise ConfigError(f"scenes: {message}")


@dataclass
class Scene:
    """One composed image: RGB pixels, label map (with ignore band) and per-object records for scenes.json."""

    image: np.ndarray
    mask: np.ndarray
    texture: int
    objects: list[dict[str, Any]]


def load_textures() -> list[np.ndarray]:
    """The background images as uint8 (H, W, 3), in :data:`TEXTURES` order."""
    import skimage.data

    textures = []
    for name in TEXTURES:
        pixels = getattr(skimage.data, name)()
        if pixels.ndim == 2:
            pixels = (pixels[..., None] * np.asarray(_GREY_TINTS[name])).round().astype(np.uint8)
        textures.append(np.ascontiguousarray(pixels[..., :3]))
    return textures


def preferred_texture(class_index: int) -> int:
    return class_index % len(TEXTURES)


def render_item(item: np.ndarray, size: int, flip: bool) -> tuple[np.ndarray, np.ndarray]:
    """Upscaled intensities and the object mask of a 28x28 item; the mask is what gets pasted, exactly."""
    upscaled = np.asarray(Image.fromarray(item).resize((size, size), Image.BILINEAR))
    if flip:
        upscaled = upscaled[:, ::-1]
    return upscaled, upscaled > ITEM_THRESHOLD


def class_glyphs(num_classes: int) -> np.ndarray:
    """One distinct GLYPH_CELLS² binary pattern per class, each with between a third and two thirds of cells on."""
    rng = np.random.default_rng(_GLYPH_SEED)
    cells = GLYPH_CELLS * GLYPH_CELLS
    glyphs: list[np.ndarray] = []
    while len(glyphs) < num_classes:
        glyph = rng.random(cells) < 0.5
        if cells / 3 <= glyph.sum() <= 2 * cells / 3 and not any((glyph == g).all() for g in glyphs):
            glyphs.append(glyph)
    return np.stack(glyphs).reshape(num_classes, GLYPH_CELLS, GLYPH_CELLS)


def emblem_position(local: np.ndarray, side: int, rng: np.random.Generator) -> tuple[int, int]:
    """Top-left (row, col) of a ``side``² square drawn uniformly among those most inside the object mask.

    Squares fully inside the mask are preferred; thin items (sandals) may have none, and then the squares
    with the largest overlap are the candidates.
    """
    inside = ndimage.uniform_filter(local.astype(np.float64), size=side, mode="constant", origin=-(side // 2))
    limit = local.shape[0] - side + 1
    inside = np.round(inside[:limit, :limit] * side * side)
    rows, cols = np.nonzero(inside == inside.max())
    pick = int(rng.integers(0, len(rows)))
    return int(rows[pick]), int(cols[pick])


def ignore_band(label_map: np.ndarray, width: int) -> np.ndarray:
    """Pixels whose (width+1)² window (offsets -⌈w/2⌉..⌊w/2⌋) holds two labels: a band of ``width`` px per edge."""
    if width == 0:
        return np.zeros(label_map.shape, dtype=bool)
    size = width + 1
    high = ndimage.maximum_filter(label_map, size=size, mode="nearest")
    low = ndimage.minimum_filter(label_map, size=size, mode="nearest")
    return high != low


def _background(texture: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """A random square crop (half to all of the short side), maybe mirrored, resized to ``size``."""
    height, width = texture.shape[:2]
    short = min(height, width)
    side = int(rng.integers(short // 2, short + 1))
    top, left = int(rng.integers(0, height - side + 1)), int(rng.integers(0, width - side + 1))
    crop = texture[top : top + side, left : left + side]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    return np.asarray(Image.fromarray(np.ascontiguousarray(crop)).resize((size, size), Image.BILINEAR))


def compose_scene(cfg: ScenesConfig, pool: FashionMNIST, textures: list[np.ndarray], rng: np.random.Generator,
                  part_rng: np.random.Generator) -> Scene:
    """Draw objects, a background (biased by ``cooccurrence``) and paste with the occlusion bound.

    Emblem positions come from ``part_rng``, never from ``rng``, so a benchmark with emblems has exactly
    the layout, masks and labels of the same seed without them: only the pixels under the emblems differ.
    """
    side = cfg.image_size
    count = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
    items = rng.integers(0, len(pool), size=count)
    first_class = int(pool.labels[items[0]])
    if rng.random() < cfg.cooccurrence:
        texture = preferred_texture(first_class)
    else:
        texture = int(rng.integers(0, len(textures)))
    image = _background(textures[texture], side, rng).astype(np.float32)
    label_map = np.zeros((side, side), dtype=np.uint8)
    owner = np.full((side, side), -1, dtype=np.int16)
    pasted: list[np.ndarray] = []
    objects: list[dict[str, Any]] = []
    for item in items:
        class_index = int(pool.labels[item])
        size = int(round(rng.uniform(*cfg.scale_range) * side))
        flip = bool(rng.random() < 0.5)
        hue, saturation = float(rng.random()), float(rng.uniform(0.5, 1.0))
        intensity, local = render_item(pool.images[item], size, flip)
        for _ in range(PLACEMENT_TRIES):
            x, y = int(rng.integers(0, side - size + 1)), int(rng.integers(0, side - size + 1))
            footprint = np.zeros((side, side), dtype=bool)
            footprint[y : y + size, x : x + size] = local
            if all((footprint & earlier).sum() <= cfg.occlusion * earlier.sum() for earlier in pasted):
                break
        else:
            continue
        # Tint keeps the item's shading: value follows its intensity, hue and saturation are drawn per object.
        shade = 0.3 + 0.7 * intensity.astype(np.float32) / max(int(intensity.max()), 1)
        colour = np.asarray(colorsys.hsv_to_rgb(hue, saturation, 1.0), dtype=np.float32) * 255
        image[footprint] = (shade[local][:, None] * colour)
        record: dict[str, Any] = {"class": class_index, "item": int(item), "x": x, "y": y, "size": size, "flip": flip}
        if cfg.shape_noise > 0:
            # The label (and emblem) class is redrawn, so the garment's shape only weakly tells the class.
            record["garment_class"] = class_index
            if part_rng.random() < cfg.shape_noise:
                class_index = record["class"] = int(part_rng.integers(0, len(CLASS_NAMES)))
        if cfg.part_size > 0:
            record["part"] = _stamp_emblem(image, footprint, local, x, y, class_index, cfg.part_size, part_rng)
        label_map[footprint] = class_index + 1
        owner[footprint] = len(pasted)
        pasted.append(footprint)
        objects.append(record)

    band = ignore_band(label_map, cfg.ignore_width)
    for index, record in enumerate(objects):
        visible = owner == index
        # An object counts only if some of it is labelled; otherwise labels would list a class the mask lacks.
        record["kept"] = bool((visible & ~band).any())
        if record["kept"]:
            rows, cols = np.flatnonzero(visible.any(axis=1)), np.flatnonzero(visible.any(axis=0))
            record["box"] = [int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1]
    mask = np.where(band, IGNORE_INDEX, label_map).astype(np.uint8)
    return Scene(np.clip(image.round(), 0, 255).astype(np.uint8), mask, texture, objects)


def _stamp_emblem(image: np.ndarray, footprint: np.ndarray, local: np.ndarray, x: int, y: int, class_index: int,
                  part_size: float, rng: np.random.Generator) -> list[int]:
    """Paint the class emblem (white cells on black) where it overlaps the object; return its box (x0, y0, x1, y1)."""
    size = local.shape[0]
    side = max(GLYPH_CELLS, int(round(part_size * size)))
    row, col = emblem_position(local, side, rng)
    glyph = np.asarray(Image.fromarray(class_glyphs(class_index + 1)[class_index].astype(np.uint8) * 255)
                       .resize((side, side), Image.NEAREST)) > 0
    top, left = y + row, x + col
    window = footprint[top : top + side, left : left + side]
    patch = image[top : top + side, left : left + side]
    patch[window] = np.where(glyph[window], 255.0, 0.0)[:, None]
    return [left, top, left + side, top + side]


def voc_annotation_xml(stem: str, size: int, objects: list[dict[str, Any]]) -> str:
    """VOC XML with one <object> per visible object; boxes in VOC's 1-based inclusive convention."""
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = "scenes"
    ET.SubElement(root, "filename").text = f"{stem}.jpg"
    size_el = ET.SubElement(root, "size")
    for tag, value in (("width", size), ("height", size), ("depth", 3)):
        ET.SubElement(size_el, tag).text = str(value)
    ET.SubElement(root, "segmented").text = "1"
    for record in objects:
        if not record["kept"]:
            continue
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = CLASS_NAMES[record["class"]]
        ET.SubElement(obj, "pose").text = "Unspecified"
        ET.SubElement(obj, "truncated").text = "0"
        ET.SubElement(obj, "difficult").text = "0"
        bndbox = ET.SubElement(obj, "bndbox")
        x0, y0, x1, y1 = record["box"]
        for tag, value in (("xmin", x0 + 1), ("ymin", y0 + 1), ("xmax", x1), ("ymax", y1)):
            ET.SubElement(bndbox, tag).text = str(value)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode") + "\n"


def assign_splits(cfg: ScenesConfig) -> list[str]:
    """Split name of each image index: a seeded permutation cut by ``split_fractions``."""
    order = np.random.default_rng([cfg.seed, _SPLIT_STREAM]).permutation(cfg.n)
    n_train = int(round(cfg.split_fractions[0] * cfg.n))
    n_val = min(int(round(cfg.split_fractions[1] * cfg.n)), cfg.n - n_train)
    splits = ["test"] * cfg.n
    for position, index in enumerate(order):
        if position < n_train:
            splits[index] = "train"
        elif position < n_train + n_val:
            splits[index] = "val"
    return splits


def generate_scenes(cfg: ScenesConfig, out: str | Path, progress: bool = True) -> WeakDataset:
    """Write the benchmark under ``out`` (VOC layout plus ``scenes.json``) and return its train split.

    Other splits: ``load_voc(out, "val")`` / ``"test"``. ``scenes.json`` is written last, so its presence
    means the folder is complete.
    """
    out = Path(out)
    pools = {"train": load_fashion_mnist("train", subset=cfg.subset), "test": load_fashion_mnist("test", subset=cfg.subset)}
    textures = load_textures()
    splits = assign_splits(cfg)
    digits = max(5, len(str(cfg.n - 1)))
    stems = [f"scene_{index:0{digits}d}" for index in range(cfg.n)]
    images: dict[str, dict[str, Any]] = {}
    for index in tqdm(range(cfg.n), desc="scenes", disable=not progress):
        stem, split = stems[index], splits[index]
        pool_name = "train" if split == "train" else "test"
        rng = np.random.default_rng([cfg.seed, _IMAGE_STREAM, index])
        part_rng = np.random.default_rng([cfg.seed, _PART_STREAM, index])
        for _ in range(COMPOSE_TRIES):
            scene = compose_scene(cfg, pools[pool_name], textures, rng, part_rng)
            if any(record["kept"] for record in scene.objects):
                break
        else:
            raise ConfigError(f"scenes: objects keep vanishing under ignore_width={cfg.ignore_width}; lower it")
        save_image(out / "JPEGImages" / f"{stem}.jpg", Image.fromarray(scene.image), quality=95)
        save_label_png(out / "SegmentationClass" / f"{stem}.png", scene.mask)
        write_text(out / "Annotations" / f"{stem}.xml", voc_annotation_xml(stem, cfg.image_size, scene.objects))
        images[stem] = {"split": split, "pool": pool_name, "texture": TEXTURES[scene.texture], "objects": scene.objects}

    for split in SPLITS:
        listed = [stem for stem, split_of in zip(stems, splits) if split_of == split]
        write_text(out / "ImageSets" / "Segmentation" / f"{split}.txt", "".join(f"{stem}\n" for stem in listed))
    write_text(out / CLASS_NAMES_FILE, "".join(f"{name}\n" for name in CLASS_NAMES))
    write_json(
        out / "scenes.json",
        {
            "config": dataclasses.asdict(cfg),
            "fashion_mnist": {name: pool.source for name, pool in pools.items()},
            "item_threshold": ITEM_THRESHOLD,
            "textures": list(TEXTURES),
            "preferred_texture": {name: TEXTURES[preferred_texture(k)] for k, name in enumerate(CLASS_NAMES)},
            "images": images,
        },
    )
    return load_voc(out, "train")
