"""WSOL datasets in their standard layouts, on generated fixtures, and evaluation of a CAM folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from scarce.cams.store import save_cam
from scarce.data.base import IGNORE_INDEX, open_dataset
from scarce.errors import DataError
from scarce.localization.datasets import load_cub, load_imagenet_val, load_wsol_metadata, open_wsol_dataset
from scarce.localization.evaluate import WsolMetricsConfig, evaluate_cam_folder


def write_image(path: Path, size=(40, 30), colour=(120, 30, 200)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


@pytest.fixture()
def cub(tmp_path):
    root = tmp_path / "CUB_200_2011"
    files = {
        "classes.txt": "1 001.Black_footed_Albatross\n2 002.Laysan_Albatross\n",
        "images.txt": "1 001.Black_footed_Albatross/a_0001.jpg\n2 002.Laysan_Albatross/b_0002.jpg\n"
                      "3 002.Laysan_Albatross/b_0003.jpg\n",
        "image_class_labels.txt": "1 1\n2 2\n3 2\n",
        "bounding_boxes.txt": "1 3.0 4.0 20.0 10.0\n2 0.0 0.0 40.0 30.0\n3 5.5 6.0 10.0 12.0\n",
        "train_test_split.txt": "1 1\n2 0\n3 1\n",
    }
    for name, text in files.items():
        root.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    for relative in ("001.Black_footed_Albatross/a_0001.jpg", "002.Laysan_Albatross/b_0002.jpg",
                     "002.Laysan_Albatross/b_0003.jpg"):
        write_image(root / "images" / relative)
    return root


def test_cub_layout(cub):
    train = load_cub(cub.parent, "train")  # the folder holding CUB_200_2011 works too
    assert train.class_names == ("Black_footed_Albatross", "Laysan_Albatross")
    assert [s.stem for s in train.samples] == ["a_0001", "b_0003"]
    assert [s.labels for s in train.samples] == [(0,), (1,)]
    box = train.samples[1].boxes[0]
    assert (box.label, box.x0, box.y0, box.x1, box.y1) == (1, 5.5, 6.0, 15.5, 18.0)  # x + width, y + height
    test = load_cub(cub, "test")
    assert [s.stem for s in test.samples] == ["b_0002"]


def test_cub_errors_name_the_file(cub):
    (cub / "bounding_boxes.txt").write_text("1 3.0 4.0\n")
    with pytest.raises(DataError, match="bounding_boxes.txt: image 1: box must be 4 numbers"):
        load_cub(cub, "train")
    (cub / "bounding_boxes.txt").write_text("1 3.0 4.0 20.0 10.0\n")
    (cub / "train_test_split.txt").write_text("1 1\n2 0\n")
    with pytest.raises(DataError, match="train_test_split.txt.*image id 3"):
        load_cub(cub, "train")
    with pytest.raises(DataError, match="CUB_200_2011"):
        load_cub(cub.parent / "nowhere", "train")
    with pytest.raises(Exception, match="splits"):
        load_cub(cub, "val")


def test_imagenet_val_xml(tmp_path):
    images, xml = tmp_path / "val", tmp_path / "boxes"
    write_image(images / "n01440764" / "ILSVRC2012_val_00000001.JPEG")
    write_image(images / "n01440764" / "ILSVRC2012_val_00000002.JPEG")
    xml.mkdir()
    (xml / "ILSVRC2012_val_00000001.xml").write_text(
        "<annotation><filename>ILSVRC2012_val_00000001</filename>"
        "<object><name>n01751748</name><bndbox><xmin>11</xmin><ymin>8</ymin><xmax>30</xmax><ymax>19</ymax></bndbox></object>"
        "<object><name>n01751748</name><bndbox><xmin>1</xmin><ymin>2</ymin><xmax>5</xmax><ymax>6</ymax></bndbox></object>"
        "</annotation>")
    (xml / "ILSVRC2012_val_00000002.xml").write_text(
        "<annotation><object><name>n01440764</name><bndbox><xmin>0</xmin><ymin>0</ymin><xmax>9</xmax>"
        "<ymax>9</ymax></bndbox></object></annotation>")
    dataset = load_imagenet_val(images, xml)
    assert dataset.num_classes == 1000
    first, second = dataset.samples
    assert first.labels == (65,) and dataset.class_names[65] == "sea snake"
    assert [(b.x0, b.y0, b.x1, b.y1) for b in first.boxes] == [(11, 8, 30, 19), (1, 2, 5, 6)]
    assert second.labels == (0,) and dataset.class_names[0].startswith("tench")
    (xml / "ILSVRC2012_val_00000003.xml").write_text("<annotation><object><name>n99999999</name></object></annotation>")
    with pytest.raises(DataError, match="00000003.xml.*WordNet"):
        load_imagenet_val(images, xml)


def write_mask(path: Path, mask: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask.astype(np.uint8)).save(path)


def test_openimages_masks_in_wsolevaluation_layout(tmp_path):
    data, meta = tmp_path / "OpenImages", tmp_path / "metadata" / "val"
    write_image(data / "val" / "0bt_c3" / "aa.jpg", size=(8, 6))
    write_image(data / "val" / "0by6g" / "bb.jpg", size=(8, 6))
    first, second = np.zeros((6, 8)), np.zeros((6, 8))
    first[1:3, 1:4] = 255
    second[4:6, 6:8] = 255
    ignore = np.zeros((6, 8))
    ignore[0:4, 0:5] = 255  # a box around the first instance: its non-object pixels are ignored
    write_mask(data / "val" / "0bt_c3" / "aa_m1.png", first)
    write_mask(data / "val" / "0bt_c3" / "aa_m2.png", second[::2, ::2])  # half size: resized to the image
    write_mask(data / "val" / "0bt_c3" / "aa_ignore.png", ignore)
    write_mask(data / "val" / "0by6g" / "bb_m1.png", second)
    meta.mkdir(parents=True)
    (meta / "image_ids.txt").write_text("val/0bt_c3/aa.jpg\nval/0by6g/bb.jpg\n")
    (meta / "class_labels.txt").write_text("val/0bt_c3/aa.jpg,0\nval/0by6g/bb.jpg,1\n")
    (meta / "localization.txt").write_text(
        "val/0bt_c3/aa.jpg,val/0bt_c3/aa_m1.png,val/0bt_c3/aa_ignore.png\n"
        "val/0bt_c3/aa.jpg,val/0bt_c3/aa_m2.png,\n"
        "val/0by6g/bb.jpg,val/0by6g/bb_m1.png,\n")
    dataset = open_wsol_dataset("openimages", data, "val", meta.parent)
    assert dataset.class_names == ("0bt_c3", "0by6g")
    assert [s.stem for s in dataset.samples] == ["val__0bt_c3__aa", "val__0by6g__bb"]
    label_map = dataset.load_mask(dataset.samples[0])
    expected = np.zeros((6, 8), np.uint8)
    expected[0:4, 0:5] = IGNORE_INDEX
    expected[1:3, 1:4] = 1
    expected[4:6, 6:8] = 1
    assert np.array_equal(label_map, expected)
    assert dataset.load_mask(dataset.samples[1]).max() == 2


def test_wsol_box_metadata_and_missing_labels(tmp_path):
    data, meta = tmp_path / "CUB", tmp_path / "metadata" / "test"
    write_image(data / "001.A" / "x.jpg")
    meta.mkdir(parents=True)
    (meta / "image_ids.txt").write_text("001.A/x.jpg\n")
    (meta / "class_labels.txt").write_text("001.A/x.jpg,0\n")
    (meta / "localization.txt").write_text("001.A/x.jpg,60,27,385,331\n001.A/x.jpg,1,2,3,4\n")
    dataset = load_wsol_metadata(meta.parent, data, "test")
    assert [(b.x0, b.y0, b.x1, b.y1) for b in dataset.samples[0].boxes] == [(60, 27, 385, 331), (1, 2, 3, 4)]
    assert not dataset.has_mask(dataset.samples[0])
    (meta / "class_labels.txt").write_text("other.jpg,0\n")
    with pytest.raises(DataError, match="class_labels.txt"):
        load_wsol_metadata(meta.parent, data, "test")


def test_scenes_cam_folder_evaluation(tiny_scenes, tmp_path):
    """Maps equal to the ground-truth masks: PxAP and Peak IoU are 1; a blank map scores no box."""
    dataset = open_dataset("scenes", tiny_scenes, "test", allow_empty=True)
    perfect, blank = tmp_path / "perfect", tmp_path / "blank"
    for sample in dataset.samples:
        mask = dataset.load_mask(sample)
        cams = np.stack([(mask == c + 1).astype(np.float32) for c in sample.labels])
        save_cam(perfect / f"{sample.stem}.npz", cams, list(sample.labels))
        save_cam(blank / f"{sample.stem}.npz", np.zeros_like(cams), list(sample.labels))
    cases = sum(len(s.labels) for s in dataset.samples)
    scores = {s.stem: np.eye(dataset.num_classes)[list(s.labels)].sum(0) for s in dataset.samples}
    good = evaluate_cam_folder(dataset, perfect, WsolMetricsConfig(convention="exact"), scores)
    assert good.v1.count == cases and good.v1.top1_count == cases
    result = good.compute()
    assert result["PxAP"] == 1.0 and result["PeakIoU"] == 1.0
    assert result["MaxBoxAccV1"] > 0.75 and result["Top1Loc"] == result["MaxBoxAccV1"]
    bad = evaluate_cam_folder(dataset, blank, WsolMetricsConfig(convention="exact")).compute()
    assert bad["MaxBoxAccV1"] == 0.0 and bad["MaxBoxAccV2"] == 0.0 and "Top1Loc" not in bad
