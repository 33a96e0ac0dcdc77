"""The scenes generator: determinism, exact masks/boxes/labels, ignore band, splits and context bias."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from scarce.data import ScenesConfig, generate_scenes, load_voc
from scarce.data.fashion_mnist import CLASS_NAMES, load_fashion_mnist
from scarce.data.scenes import GLYPH_CELLS, class_glyphs, compose_scene, emblem_position, ignore_band, load_textures
from scarce.errors import ConfigError
from scarce.io import read_label_png


def small_config(**overrides: object) -> ScenesConfig:
    settings = {"n": 20, "image_size": 64, "subset": True}
    settings.update(overrides)
    return ScenesConfig(**settings)  # type: ignore[arg-type]


def all_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_byte_identical_files_and_another_seed_does_not(tmp_path: Path) -> None:
    generate_scenes(small_config(seed=3), tmp_path / "a", progress=False)
    generate_scenes(small_config(seed=3), tmp_path / "b", progress=False)
    generate_scenes(small_config(seed=4), tmp_path / "c", progress=False)
    first, second, other = all_files(tmp_path / "a"), all_files(tmp_path / "b"), all_files(tmp_path / "c")
    assert len(first) == 3 * 20 + 3 + 2  # jpg/png/xml per image, 3 split lists, class_names.txt, scenes.json
    assert first == second
    assert first.keys() == other.keys()
    differing = [name for name in first if first[name] != other[name] and name.startswith("JPEGImages")]
    assert len(differing) == 20


def pasted_layers(meta: dict, size: int) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Oracle: repaint every recorded object from its Fashion-MNIST item (later objects on top)."""
    pool = load_fashion_mnist(meta["pool"], subset=True)
    label = np.zeros((size, size), dtype=np.uint8)
    owner = np.full((size, size), -1)
    footprints = []
    for index, obj in enumerate(meta["objects"]):
        item = pool.images[obj["item"]]
        assert pool.labels[obj["item"]] == obj["class"]
        upscaled = np.asarray(Image.fromarray(item).resize((obj["size"], obj["size"]), Image.BILINEAR))
        local = upscaled > 30
        if obj["flip"]:
            local = local[:, ::-1]
        footprint = np.zeros((size, size), dtype=bool)
        footprint[obj["y"] : obj["y"] + obj["size"], obj["x"] : obj["x"] + obj["size"]] = local
        label[footprint] = obj["class"] + 1
        owner[footprint] = index
        footprints.append(footprint)
    return label, owner, footprints


def band_width_one(label: np.ndarray) -> np.ndarray:
    """Oracle for ignore_width=1: the label differs from the left, upper or upper-left neighbour (edges replicated)."""
    padded = np.pad(label, ((1, 0), (1, 0)), mode="edge")
    here = padded[1:, 1:]
    return (here != padded[1:, :-1]) | (here != padded[:-1, 1:]) | (here != padded[:-1, :-1])


def test_masks_boxes_and_labels_are_exactly_what_was_pasted(tmp_path: Path) -> None:
    # Heavy occlusion and many objects so that some objects are fully hidden and must be dropped.
    cfg = small_config(n=24, max_objects=6, occlusion=1.0, scale_range=(0.3, 0.6))
    generate_scenes(cfg, tmp_path, progress=False)
    meta = json.loads((tmp_path / "scenes.json").read_text())
    dropped = 0
    for split in ("train", "val", "test"):
        dataset = load_voc(tmp_path, split)
        assert dataset.class_names == CLASS_NAMES
        for sample in dataset.samples:
            record = meta["images"][sample.stem]
            assert record["split"] == split
            mask = dataset.load_mask(sample)
            expected, owner, footprints = pasted_layers(record, cfg.image_size)
            band = mask == 255
            assert np.array_equal(band, band_width_one(expected))
            assert np.array_equal(mask[~band], expected[~band])
            for value in np.unique(mask[~band]):
                if value:
                    class_union = np.any([f for f, o in zip(footprints, record["objects"]) if o["class"] == value - 1], axis=0)
                    assert class_union[mask == value].all()
            present = {int(v) - 1 for v in np.unique(mask) if v not in (0, 255)}
            assert sample.labels == tuple(sorted(present))
            kept = [i for i, o in enumerate(record["objects"]) if o["kept"]]
            dropped += len(record["objects"]) - len(kept)
            assert len(sample.boxes) == len(kept)
            for box, index in zip(sample.boxes, kept):
                rows, cols = np.nonzero(owner == index)
                assert box.label == record["objects"][index]["class"]
                assert (box.x0, box.y0, box.x1, box.y1) == (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1)
            for index, obj in enumerate(record["objects"]):
                if not obj["kept"]:
                    assert not ((owner == index) & ~band).any()
    assert dropped > 0


def test_ignore_band_has_the_configured_width() -> None:
    edge = np.array([[0, 0, 0, 3, 3, 3]], dtype=np.uint8).repeat(3, axis=0)
    assert ignore_band(edge, 0).sum() == 0
    assert ignore_band(edge, 1)[0].tolist() == [False, False, False, True, False, False]
    assert ignore_band(edge, 2)[0].tolist() == [False, False, True, True, False, False]
    assert ignore_band(edge, 3)[0].tolist() == [False, False, True, True, True, False]


def test_split_lists_partition_the_stems(tmp_path: Path) -> None:
    generate_scenes(small_config(n=23), tmp_path, progress=False)
    lists = {s: (tmp_path / "ImageSets" / "Segmentation" / f"{s}.txt").read_text().split() for s in ("train", "val", "test")}
    assert [len(lists[s]) for s in ("train", "val", "test")] == [14, 5, 4]  # round(13.8), round(4.6), rest
    stems = sorted(p.stem for p in (tmp_path / "JPEGImages").glob("*.jpg"))
    assert sorted(lists["train"] + lists["val"] + lists["test"]) == stems
    assert len(set(lists["train"]) | set(lists["val"]) | set(lists["test"])) == 23


def test_full_cooccurrence_puts_every_image_on_its_first_class_texture(tmp_path: Path) -> None:
    generate_scenes(small_config(n=30, cooccurrence=1.0), tmp_path / "biased", progress=False)
    meta = json.loads((tmp_path / "biased" / "scenes.json").read_text())
    preferred = meta["preferred_texture"]
    assert preferred[CLASS_NAMES[0]] == meta["textures"][0] and preferred[CLASS_NAMES[9]] == meta["textures"][9 % 8]
    for record in meta["images"].values():
        assert record["texture"] == preferred[CLASS_NAMES[record["objects"][0]["class"]]]

    generate_scenes(small_config(n=30, cooccurrence=0.0), tmp_path / "uniform", progress=False)
    meta = json.loads((tmp_path / "uniform" / "scenes.json").read_text())
    mismatched = [r for r in meta["images"].values() if r["texture"] != preferred[CLASS_NAMES[r["objects"][0]["class"]]]]
    assert len(mismatched) > 15  # 7 of 8 textures are not the preferred one


def test_emblems_change_only_the_pixels_under_them(tmp_path: Path) -> None:
    generate_scenes(small_config(n=16), tmp_path / "plain", progress=False)
    generate_scenes(small_config(n=16, part_size=0.3), tmp_path / "parts", progress=False)
    plain, parts = all_files(tmp_path / "plain"), all_files(tmp_path / "parts")
    for name in plain:  # same layout, masks, labels, boxes and splits
        if name.startswith(("SegmentationClass", "Annotations", "ImageSets")):
            assert plain[name] == parts[name], name
    meta_plain = json.loads(plain["scenes.json"])["images"]
    meta_parts = json.loads(parts["scenes.json"])["images"]
    for stem, record in meta_parts.items():
        for obj, plain_obj in zip(record["objects"], meta_plain[stem]["objects"], strict=True):
            x0, y0, x1, y1 = obj.pop("part")
            assert obj == plain_obj
            side = max(GLYPH_CELLS, round(0.3 * obj["size"]))
            assert (x1 - x0, y1 - y0) == (side, side)
            assert obj["x"] <= x0 and x1 <= obj["x"] + obj["size"] and obj["y"] <= y0 and y1 <= obj["y"] + obj["size"]
        assert "part" not in json.dumps(meta_plain[stem])


@pytest.mark.parametrize("shape_noise", [0.0, 1.0])
def test_emblem_is_the_class_glyph_painted_inside_the_object(shape_noise: float) -> None:
    # 50-px objects and 20-px emblems: nearest-neighbour upscaling of the 5x5 glyph is an exact 4x repeat
    cfg = small_config(image_size=50, min_objects=1, max_objects=1, scale_range=(1.0, 1.0), part_size=0.4,
                       shape_noise=shape_noise)
    pool = load_fashion_mnist("train", subset=True)
    textures = load_textures()
    glyphs = class_glyphs(len(CLASS_NAMES))
    for index in range(8):
        scene = compose_scene(cfg, pool, textures, np.random.default_rng([1, index]), np.random.default_rng([2, index]))
        obj = scene.objects[0]
        x0, y0, x1, y1 = obj["part"]
        glyph = np.kron(glyphs[obj["class"]], np.ones(((y1 - y0) // GLYPH_CELLS,) * 2, dtype=bool))
        assert glyph.shape == (y1 - y0, x1 - x0) == (20, 20)
        patch = scene.image[y0:y1, x0:x1]
        inside = scene.mask[y0:y1, x0:x1] == obj["class"] + 1
        assert inside.any()
        assert (patch[inside & glyph] == 255).all() and (patch[inside & ~glyph] == 0).all()


def test_shape_noise_relabels_objects_and_their_emblems(tmp_path: Path) -> None:
    generate_scenes(small_config(n=30, part_size=0.3, shape_noise=1.0), tmp_path, progress=False)
    meta = json.loads((tmp_path / "scenes.json").read_text())
    objects = [obj for record in meta["images"].values() for obj in record["objects"]]
    pool_labels = {name: load_fashion_mnist(name, subset=True).labels for name in ("train", "test")}
    relabelled = 0
    for record in meta["images"].values():
        for obj in record["objects"]:
            assert obj["garment_class"] == pool_labels[record["pool"]][obj["item"]]
            relabelled += obj["class"] != obj["garment_class"]
    assert relabelled > 0.7 * len(objects)  # redrawn uniformly: 9 in 10 land on another class
    for split in ("train", "val", "test"):  # masks and image labels follow the redrawn class
        for sample in load_voc(tmp_path, split).samples:
            kept = {obj["class"] for obj in meta["images"][sample.stem]["objects"] if obj["kept"]}
            assert set(sample.labels) == kept
    with pytest.raises(ConfigError, match="shape_noise needs part_size"):
        ScenesConfig(shape_noise=0.5)


def test_emblem_position_prefers_squares_inside_the_mask() -> None:
    local = np.zeros((12, 12), dtype=bool)
    local[2:6, 3:9] = True  # 4x6 rectangle: the 4x4 squares fully inside start at row 2, columns 3..5
    rng = np.random.default_rng(0)
    positions = {emblem_position(local, 4, rng) for _ in range(200)}
    assert positions == {(2, 3), (2, 4), (2, 5)}
    thin = np.zeros((12, 12), dtype=bool)
    thin[5, 1:11] = True  # no 3x3 square fits: the best overlap (3 pixels) is taken
    positions = {emblem_position(thin, 3, rng) for _ in range(200)}
    assert positions == {(r, c) for r in (3, 4, 5) for c in range(1, 9)}


def test_class_glyphs_are_distinct_and_stable() -> None:
    glyphs = class_glyphs(10)
    assert glyphs.shape == (10, GLYPH_CELLS, GLYPH_CELLS)
    flat = glyphs.reshape(10, -1)
    assert len({row.tobytes() for row in flat}) == 10
    assert np.array_equal(class_glyphs(4), glyphs[:4])  # a class's emblem does not depend on how many are drawn


def test_invalid_settings_are_rejected() -> None:
    with pytest.raises(ConfigError, match="cooccurrence"):
        ScenesConfig(cooccurrence=1.5)
    with pytest.raises(ConfigError, match="split_fractions"):
        ScenesConfig(split_fractions=(0.5, 0.2, 0.2))
    with pytest.raises(ConfigError, match="part_size"):
        ScenesConfig(part_size=1.0)
    with pytest.raises(ConfigError, match="smallest emblem"):
        ScenesConfig(image_size=64, scale_range=(0.2, 0.5), part_size=0.2)


def test_mask_png_uses_the_voc_palette(tmp_path: Path) -> None:
    generate_scenes(small_config(n=2), tmp_path, progress=False)
    path = tmp_path / "SegmentationClass" / "scene_00000.png"
    with Image.open(path) as img:
        assert img.mode == "P"
        palette = img.getpalette()
    assert palette is not None and palette[3:6] == [128, 0, 0] and palette[255 * 3 : 256 * 3] == [224, 224, 192]
    assert read_label_png(path).dtype == np.uint8


def test_cli_writes_scenes_with_emblems(tmp_path: Path) -> None:
    from scarce.cli import main

    out = tmp_path / "cli"
    args = ["data", "scenes", "--out", str(out), "--n", "6", "--image-size", "64", "--scale-range", "0.4", "0.6",
            "--part-size", "0.3", "--shape-noise", "0.5"]
    assert main(args) == 0
    meta = json.loads((out / "scenes.json").read_text())
    assert (meta["config"]["part_size"], meta["config"]["shape_noise"]) == (0.3, 0.5)
    assert all("part" in obj and "garment_class" in obj for r in meta["images"].values() for obj in r["objects"])
    assert len(list((out / "JPEGImages").glob("*.jpg"))) == 6
