"""VOC, COCO and folder loaders on hand-made fixtures, and the DataErrors for bad inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from scarce.data import VOC_CLASSES, decode_rle_counts, export_coco_masks, load_coco, load_folder, load_voc, open_dataset
from scarce.data.coco import rle_to_mask
from scarce.errors import ConfigError, DataError
from scarce.io import read_label_png


def write_jpeg(path: Path, width: int = 8, height: int = 6) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (width, height), (90, 120, 30)).save(path, quality=95)


def write_mask(path: Path, mask: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask.astype(np.uint8), mode="L").save(path)


def voc_xml(objects: list[tuple[str, int, tuple[int, int, int, int]]]) -> str:
    parts = []
    for name, difficult, (xmin, ymin, xmax, ymax) in objects:
        parts.append(
            f"<object><name>{name}</name><difficult>{difficult}</difficult><bndbox><xmin>{xmin}</xmin>"
            f"<ymin>{ymin}</ymin><xmax>{xmax}</xmax><ymax>{ymax}</ymax></bndbox></object>"
        )
    return f"<annotation><filename>x.jpg</filename>{''.join(parts)}</annotation>"


def make_voc(tmp_path: Path) -> Path:
    """VOCdevkit/VOC2012 with 3 images: two annotated by XML, one ('c') only by its mask."""
    voc = tmp_path / "VOCdevkit" / "VOC2012"
    for stem in ("a", "b", "c"):
        write_jpeg(voc / "JPEGImages" / f"{stem}.jpg")
    (voc / "Annotations").mkdir(parents=True)
    (voc / "Annotations" / "a.xml").write_text(voc_xml([("dog", 0, (1, 2, 4, 5)), ("person", 1, (3, 1, 8, 6))]))
    (voc / "Annotations" / "b.xml").write_text(voc_xml([("cat", 0, (2, 2, 7, 6))]))
    mask_c = np.zeros((6, 8), np.uint8)
    mask_c[1:3, 1:3] = 15  # person (index 14)
    mask_c[4, :] = 255
    mask_c[5, 5] = 3  # bird (index 2)
    write_mask(voc / "SegmentationClass" / "c.png", mask_c)
    mask_a = np.full((6, 8), 12, np.uint8)
    write_mask(voc / "SegmentationClass" / "a.png", mask_a)
    write_mask(voc / "SegmentationClassAug" / "b.png", np.full((6, 8), 8, np.uint8))
    (voc / "ImageSets" / "Segmentation").mkdir(parents=True)
    (voc / "ImageSets" / "Segmentation" / "train.txt").write_text("a\nc\n\n")
    (voc / "ImageSets" / "Segmentation" / "val.txt").write_text("b\n")
    (voc / "ImageSets" / "SegmentationAug").mkdir(parents=True)
    (voc / "ImageSets" / "SegmentationAug" / "train_aug.txt").write_text(
        "/JPEGImages/a.jpg /SegmentationClassAug/a.png\nb\n"
    )
    return voc


def test_voc_labels_from_xml_and_masks_and_1_based_boxes(tmp_path: Path) -> None:
    voc = make_voc(tmp_path)
    dataset = load_voc(voc, "train")
    assert dataset.class_names == VOC_CLASSES and dataset.root == voc
    a, c = dataset.samples
    assert (a.stem, a.labels) == ("a", (11, 14))  # dog, person (difficult still counts)
    assert a.boxes[0].label == 11 and (a.boxes[0].x0, a.boxes[0].y0, a.boxes[0].x1, a.boxes[0].y1) == (0, 1, 4, 5)
    assert (a.boxes[1].x0, a.boxes[1].y0, a.boxes[1].x1, a.boxes[1].y1) == (2, 0, 8, 6)
    assert c.labels == (2, 14) and c.boxes == ()
    assert dataset.label_vector(a).tolist() == [1.0 if i in (11, 14) else 0.0 for i in range(20)]
    assert dataset.label_vector(a).dtype == np.float32
    assert dataset.load_mask(c)[5, 5] == 3 and dataset.load_image(a).shape == (6, 8, 3)
    assert open_dataset("voc", voc, "train").samples == dataset.samples
    assert open_dataset("scenes", voc, "train").samples == dataset.samples


def test_voc_accepts_both_root_forms(tmp_path: Path) -> None:
    voc = make_voc(tmp_path)
    reference = load_voc(voc, "val").samples
    assert load_voc(tmp_path / "VOCdevkit", "val").samples == reference
    assert load_voc(tmp_path, "val").samples == reference
    with pytest.raises(DataError, match="not a PASCAL VOC folder"):
        load_voc(tmp_path / "VOCdevkit" / "VOC2012" / "JPEGImages", "val")


def test_voc_train_aug_prefers_sbd_masks(tmp_path: Path) -> None:
    voc = make_voc(tmp_path)
    dataset = load_voc(voc, "train_aug")
    a, b = dataset.samples
    assert a.mask_path == voc / "SegmentationClass" / "a.png"  # no Aug mask: falls back
    assert b.mask_path == voc / "SegmentationClassAug" / "b.png"
    assert load_voc(voc, "val").samples[0].mask_path is None  # official splits never use SBD masks
    (voc / "ImageSets" / "SegmentationAug" / "train_aug.txt").unlink()
    (voc / "ImageSets" / "Segmentation" / "train_aug.txt").write_text("b\n")
    assert [s.stem for s in load_voc(voc, "train_aug").samples] == ["b"]


def test_voc_class_names_file_overrides_the_20_classes(tmp_path: Path) -> None:
    voc = make_voc(tmp_path)
    (voc / "class_names.txt").write_text("cat\ndog\nperson\n")
    (voc / "ImageSets" / "Segmentation" / "ab.txt").write_text("a\nb\n")
    dataset = load_voc(voc, "ab")
    assert dataset.class_names == ("cat", "dog", "person")
    assert [s.labels for s in dataset.samples] == [(1, 2), (0,)]


def test_voc_layout_honours_the_folder_loaders_classes_txt(tmp_path: Path) -> None:
    voc = make_voc(tmp_path)
    (voc / "classes.txt").write_text("cat\ndog\nperson\n")
    (voc / "ImageSets" / "Segmentation" / "ab.txt").write_text("a\nb\n")
    assert load_voc(voc, "ab").class_names == ("cat", "dog", "person")
    (voc / "class_names.txt").write_text("cat\ndog\nperson\n")  # both, agreeing: fine
    assert load_voc(voc, "ab").class_names == ("cat", "dog", "person")
    (voc / "class_names.txt").write_text("dog\ncat\nperson\n")
    with pytest.raises(DataError, match=r"classes\.txt: lists other classes than class_names\.txt"):
        load_voc(voc, "ab")


def test_one_class_list_reader(tmp_path: Path) -> None:
    from scarce.data.base import read_class_names

    path = tmp_path / "classes.txt"
    path.write_text("  n01 tench  \n\n n02 goldfish # a fish\n# header\n")
    assert read_class_names(path, comment="#") == ("n01 tench", "n02 goldfish")
    assert read_class_names(path) == ("n01 tench", "n02 goldfish # a fish", "# header")
    for text, problem in (("", "class list is empty"), ("a\nb\na\n", "names 'a' more than once")):
        path.write_text(text)
        with pytest.raises(DataError, match=problem):
            read_class_names(path)
    path.write_bytes(b"\xff\xfe")
    with pytest.raises(DataError, match="not UTF-8"):
        read_class_names(path)
    with pytest.raises(DataError, match="nope.txt: class list not found"):
        read_class_names(tmp_path / "nope.txt")


def test_voc_bad_inputs_name_the_file(tmp_path: Path) -> None:
    voc = make_voc(tmp_path)
    splits = voc / "ImageSets" / "Segmentation"
    (splits / "missing.txt").write_text("a\nghost\n")
    with pytest.raises(DataError, match=r"ghost\.jpg.*missing\.txt"):
        load_voc(voc, "missing")

    (voc / "Annotations" / "b.xml").write_text(voc_xml([("unicorn", 0, (1, 1, 2, 2))]))
    with pytest.raises(DataError, match=r"b\.xml.*unicorn"):
        load_voc(voc, "val")

    (voc / "Annotations" / "b.xml").write_text(voc_xml([]))
    with pytest.raises(DataError, match=r"b\.xml.*allow_empty=True"):
        load_voc(voc, "val")
    assert load_voc(voc, "val", allow_empty=True).samples[0].labels == ()

    (voc / "JPEGImages" / "a.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    dataset = load_voc(voc, "train")
    with pytest.raises(DataError, match=r"a\.jpg"):
        dataset.load_image(dataset.samples[0])

    write_mask(voc / "SegmentationClass" / "c.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(DataError, match=r"c\.png.*4x4"):
        dataset.load_mask(dataset.samples[1])
    write_mask(voc / "SegmentationClass" / "c.png", np.full((6, 8), 21, np.uint8))
    with pytest.raises(DataError, match=r"c\.png.*\[21\]"):
        dataset.load_mask(dataset.samples[1])

    with pytest.raises(DataError, match=r"nosuch\.txt.*available splits: missing, train, val"):
        load_voc(voc, "nosuch")
    with pytest.raises(ConfigError, match="unknown dataset kind"):
        open_dataset("imagenet", voc, "train")


def test_rle_string_decoder_against_hand_encoding() -> None:
    # runs [3, 2, 4, 1]: '3','2','4' literal; the 4th run is stored as 1 - runs[1] = -1 -> 31 = 'O' (sign bit set)
    assert decode_rle_counts("324O") == [3, 2, 4, 1]
    # 100 = 3 * 32 + 4: low group 4 with continuation (4 | 0x20 = 36 -> 'T'), then 3 -> '3'
    assert decode_rle_counts("T3") == [100]
    # 18 has bit 0x10 set, so it needs a continuation group to stay positive: (18 | 0x20) -> 'b', then '0'
    assert decode_rle_counts("02b0") == [0, 2, 18]
    assert decode_rle_counts("02604") == [0, 2, 6, 2, 10]
    # column-major runs over a 2x5 image: 0 0 0 1 1 0 0 0 0 1
    assert rle_to_mask([3, 2, 4, 1], 2, 5).astype(int).tolist() == [[0, 0, 1, 0, 0], [0, 1, 0, 0, 1]]
    with pytest.raises(ValueError):
        decode_rle_counts("T")


def make_coco(tmp_path: Path) -> Path:
    """val2017 with 3 images of 5x4 (WxH): a polygon, overlapping RLEs, and a crowd region."""
    for name in ("one.jpg", "two.jpg", "three.jpg"):
        write_jpeg(tmp_path / "val2017" / name, width=5, height=4)
    size = {"height": 4, "width": 5}
    data = {
        "images": [
            {"id": 2, "file_name": "two.jpg", **size},
            {"id": 1, "file_name": "one.jpg", **size},
            {"id": 3, "file_name": "three.jpg", **size},
        ],
        "categories": [{"id": 18, "name": "dog"}, {"id": 1, "name": "person"}, {"id": 3, "name": "car"}],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 18, "iscrowd": 0, "bbox": [1, 1, 2, 1],
             "segmentation": [[1, 1, 3, 1, 3, 2, 1, 2]]},
            # Runs are column-major (4 pixels per column). Uncompressed [0, 4, 16]: column 0.
            {"id": 11, "image_id": 2, "category_id": 3, "iscrowd": 0, "bbox": [0, 0, 1, 4],
             "segmentation": {"size": [4, 5], "counts": [0, 4, 16]}},
            # Compressed runs [4, 4, 12]: '4', '4', chr(48 + 12) = '<' -> column 1.
            {"id": 12, "image_id": 2, "category_id": 1, "iscrowd": 0, "bbox": [1, 0, 1, 4],
             "segmentation": {"size": [4, 5], "counts": "44<"}},
            # Compressed runs [0, 2, 6, 2, 10], deltas from the 4th run on: 2 - 2 = 0, 10 - 6 = 4 -> "02604":
            # rows 0-1 of columns 0 and 2, drawn over the car (later annotation wins).
            {"id": 13, "image_id": 2, "category_id": 18, "iscrowd": 0, "bbox": [0, 0, 3, 2],
             "segmentation": {"size": [4, 5], "counts": "02604"}},
            {"id": 14, "image_id": 3, "category_id": 1, "iscrowd": 0, "bbox": [0, 0, 5, 4],
             "segmentation": [[0, 0, 4, 0, 4, 3, 0, 3]]},
            {"id": 15, "image_id": 3, "category_id": 3, "iscrowd": 1, "bbox": [0, 0, 5, 1],
             "segmentation": {"size": [4, 5], "counts": [0, 1, 3, 1, 3, 1, 3, 1, 3, 1, 3]}},
        ],
    }
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "instances_val2017.json").write_text(json.dumps(data))
    return tmp_path


def test_coco_labels_boxes_and_rasterised_masks(tmp_path: Path) -> None:
    root = make_coco(tmp_path)
    dataset = load_coco(root, "val2017")
    assert dataset.class_names == ("person", "car", "dog")  # id order 1, 3, 18
    assert [s.stem for s in dataset.samples] == ["one", "two", "three"]
    one, two, three = dataset.samples
    assert one.labels == (2,) and two.labels == (0, 1, 2) and three.labels == (0, 1)
    assert [(b.label, b.x0, b.y0, b.x1, b.y1) for b in three.boxes] == [(0, 0, 0, 5, 4)]  # crowd box left out
    assert (one.boxes[0].x1, one.boxes[0].y1) == (3, 2)

    polygon = np.zeros((4, 5), np.uint8)
    polygon[1:3, 1:4] = 3  # PIL fills the polygon with its outline: x 1..3, y 1..2
    assert dataset.load_mask(one).tolist() == polygon.tolist()

    expected_two = np.zeros((4, 5), np.uint8)
    expected_two[:, 0] = 2  # car (uncompressed RLE)
    expected_two[:, 1] = 1  # person (compressed RLE)
    expected_two[0:2, [0, 2]] = 3  # dog (compressed RLE with deltas), later annotation wins over car
    assert dataset.load_mask(two).tolist() == expected_two.tolist()

    expected_three = np.ones((4, 5), np.uint8)
    expected_three[0, :] = 255  # crowd row 0 of every column -> ignore
    assert dataset.load_mask(three).tolist() == expected_three.tolist()

    only_three = dataset.subset([three])
    assert len(only_three) == 1 and len(dataset) == 3
    assert only_three.load_mask(three).tolist() == expected_three.tolist()

    exported = export_coco_masks(dataset, tmp_path / "masks", progress=False)
    assert exported.samples[1].mask_path == tmp_path / "masks" / "two.png"
    assert read_label_png(tmp_path / "masks" / "two.png").tolist() == expected_two.tolist()
    assert exported.load_mask(exported.samples[2]).tolist() == expected_three.tolist()


def test_coco_bad_inputs_name_the_file(tmp_path: Path) -> None:
    root = make_coco(tmp_path)
    json_path = root / "annotations" / "instances_val2017.json"
    data = json.loads(json_path.read_text())
    data["images"].append({"id": 4, "file_name": "four.jpg", "height": 4, "width": 5})
    json_path.write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"four\.jpg.*instances_val2017\.json"):
        load_coco(root, "val2017")
    write_jpeg(root / "val2017" / "four.jpg", width=5, height=4)
    with pytest.raises(DataError, match=r"four\.jpg.*allow_empty=True"):
        load_coco(root, "val2017")
    assert load_coco(root, "val2017", allow_empty=True).samples[3].labels == ()

    data["annotations"][1]["segmentation"]["counts"] = [0, 4, 15]
    json_path.write_text(json.dumps(data))
    dataset = load_coco(root, "val2017", allow_empty=True)
    with pytest.raises(DataError, match=r"instances_val2017\.json.*id 11.*19 pixels"):
        dataset.load_mask(dataset.samples[1])
    with pytest.raises(DataError, match=r"instances_val2014\.json"):
        load_coco(root, "val2014")


def make_folder(tmp_path: Path, labels_name: str, labels_text: str) -> Path:
    for name in ("x.jpg", "y.jpg", "z.png"):
        write_jpeg(tmp_path / "images" / name)
    (tmp_path / labels_name).write_text(labels_text)
    return tmp_path


def test_folder_with_csv_infers_sorted_classes_and_matches_masks(tmp_path: Path) -> None:
    root = make_folder(tmp_path, "labels.csv", "image,labels\nx.jpg,dog;cat\ny.jpg,\"zebra cat\"\nz.png,ant\n")
    mask = np.zeros((6, 8), np.uint8)
    mask[0, 0] = 4
    write_mask(root / "masks" / "y.png", mask)
    dataset = open_dataset("folder", root, "all")
    assert dataset.class_names == ("ant", "cat", "dog", "zebra")
    assert [(s.stem, s.labels) for s in dataset.samples] == [("x", (1, 2)), ("y", (1, 3)), ("z", (0,))]
    assert [s.mask_path for s in dataset.samples] == [None, root / "masks" / "y.png", None]
    assert dataset.load_mask(dataset.samples[1])[0, 0] == 4


def test_folder_with_json_and_class_list(tmp_path: Path) -> None:
    labels = {"x.jpg": ["cat"], "y.jpg": ["dog", "cat"], "z.png": []}
    root = make_folder(tmp_path, "labels_train.json", json.dumps(labels))
    (root / "classes.txt").write_text("dog\ncat\nbird\n")
    dataset = load_folder(root, "train", allow_empty=True)
    assert dataset.class_names == ("dog", "cat", "bird")
    assert [s.labels for s in dataset.samples] == [(1,), (0, 1), ()]
    with pytest.raises(DataError, match=r"z\.png.*allow_empty=True"):
        load_folder(root, "train")


def test_folder_bad_inputs_name_the_file(tmp_path: Path) -> None:
    root = make_folder(tmp_path, "labels.csv", "image,labels\nx.jpg,cat\nw.jpg,dog\n")
    with pytest.raises(DataError, match=r"w\.jpg.*labels\.csv"):
        load_folder(root)
    (root / "labels.csv").write_text("image,labels\nx.jpg,cat\n")
    (root / "classes.txt").write_text("dog\n")
    with pytest.raises(DataError, match=r"labels\.csv.*x\.jpg.*'cat'"):
        load_folder(root)
    (root / "labels.csv").write_text("file,tags\nx.jpg,dog\n")
    with pytest.raises(DataError, match=r"labels\.csv.*header"):
        load_folder(root)


def test_data_base_imports_no_loader_and_opens_them_by_name(tmp_path: Path) -> None:
    import ast

    import scarce.data.base as base

    tree = ast.parse(Path(base.__file__).read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    assert not imported & {"scarce.data.voc", "scarce.data.coco", "scarce.data.folder", "scarce.data.scenes"}
    assert base.LOADERS == {"voc": load_voc, "scenes": load_voc, "coco": load_coco, "folder": load_folder}
    with pytest.raises(ConfigError, match="unknown dataset kind 'vocc'; known: coco, folder, scenes, voc"):
        base.open_dataset("vocc", tmp_path, "train")
