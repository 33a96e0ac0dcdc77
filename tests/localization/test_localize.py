"""``scarce localize`` on scikit-image photos (offline ImageNet weights), odd image modes and bad files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from scarce.cli import main
from scarce.errors import ConfigError
from scarce.localization.boxes import box_iou
from scarce.localization.localize import LocalizeConfig, Localizer, load_model
from scarce.localization.rle import rle_decode, rle_encode

CAT_CLASSES = {281, 282, 283, 284, 285}  # tabby, tiger cat, Persian, Siamese, Egyptian cat
COFFEE_CLASSES = {504, 967, 968}  # coffee mug, espresso, cup
CHELSEA_CAT = (25, 0, 405, 300)  # hand-labelled: the cat fills the photo but for a strip of wall on the right
CHELSEA_FACE = (150, 90, 340, 260)  # eyes and nose


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    import skimage.data

    folder = tmp_path_factory.mktemp("photos")
    Image.fromarray(skimage.data.chelsea()).save(folder / "chelsea.jpg")
    Image.fromarray(skimage.data.astronaut()).save(folder / "astronaut.png")
    Image.fromarray(skimage.data.coffee()).save(folder / "coffee.jpg")
    Image.fromarray(skimage.data.camera()[::4, ::4]).save(folder / "gray.png")  # mode L
    rgba = np.dstack([skimage.data.coffee()[::4, ::4], np.full((100, 150), 128, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(folder / "rgba.png")
    exif = Image.new("RGB", (60, 40), (200, 30, 30)).getexif()
    exif[0x0112] = 6  # rotate 90°: shown as 40 wide, 60 high
    Image.new("RGB", (60, 40), (200, 30, 30)).save(folder / "rotated.jpg", exif=exif)
    (folder / "notes.jpg").write_text("not an image")
    (folder / "truncated.jpg").write_bytes((folder / "chelsea.jpg").read_bytes()[:300])
    return folder


@pytest.fixture(scope="module")
def imagenet():
    return load_model(LocalizeConfig())


@pytest.fixture(scope="module")
def cli_run(photos, imagenet, tmp_path_factory):
    out = tmp_path_factory.mktemp("localize")
    names = ["chelsea.jpg", "astronaut.png", "coffee.jpg", "notes.jpg", "truncated.jpg", "missing.png"]
    with pytest.MonkeyPatch.context() as patch:  # the command's default model, loaded once for the module
        patch.setattr("scarce.localization.localize.load_model", lambda cfg: imagenet)
        code = main(["localize", *[str(photos / n) for n in names], "--out", str(out)])
    return code, json.loads((out / "localization.json").read_text()), out


def test_cli_localizes_the_photos_and_skips_bad_files_by_name(cli_run, capsys):
    code, result, out = cli_run
    assert code == 1  # some files were skipped; the others were all written
    assert [img["file_name"].rsplit("/", 1)[-1] for img in result["images"]] == [
        "chelsea.jpg", "astronaut.png", "coffee.jpg"]
    skipped = {s["file_name"].rsplit("/", 1)[-1]: s["error"] for s in result["skipped"]}
    assert set(skipped) == {"notes.jpg", "truncated.jpg", "missing.png"}
    assert "not found" in skipped["missing.png"]
    html = (out / "report.html").read_text()
    assert "chelsea.jpg" in html and "Skipped files" in html and "truncated.jpg" in html


def test_chelsea_gets_a_cat_class_with_a_box_on_the_cat(cli_run):
    _, result, _ = cli_run
    chelsea = result["images"][0]
    assert (chelsea["width"], chelsea["height"]) == (451, 300)
    top5 = [c["category_id"] for c in chelsea["classes"]]
    assert len(top5) == 5 and CAT_CLASSES & set(top5)
    scores = [c["score"] for c in chelsea["classes"]]
    assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1
    cats = [a for a in result["annotations"] if a["image_id"] == chelsea["id"] and a["category_id"] in CAT_CLASSES]
    assert cats
    for annotation in cats:
        x, y, w, h = annotation["bbox"]
        assert box_iou([(x, y, x + w, y + h)], [CHELSEA_CAT])[0, 0] >= 0.5
        fx0, fy0, fx1, fy1 = CHELSEA_FACE
        assert x <= fx0 and y <= fy0 and x + w >= fx1 and y + h >= fy1
    coffee = result["images"][2]
    assert COFFEE_CLASSES & {c["category_id"] for c in coffee["classes"]}


def test_image_modes_and_coco_annotations(cli_run, imagenet, photos):
    from scarce.localization.localize import coco_json

    localizer = Localizer(LocalizeConfig(input_size=64, top_k=2, rule="all"), imagenet)
    modes = [localizer(photos / name) for name in ("gray.png", "rgba.png", "rotated.jpg")]
    assert [(r.width, r.height) for r in modes] == [(128, 128), (150, 100), (40, 60)]  # EXIF rotation applied
    own = coco_json(modes, [], localizer)
    assert own["info"]["rule"] == "all" and own["skipped"] == []
    for result in (cli_run[1], own):
        check_coco(result)


def check_coco(result):
    sizes = {img["id"]: (img["width"], img["height"]) for img in result["images"]}
    assert {c["id"] for c in result["categories"]} >= {a["category_id"] for a in result["annotations"]}
    for annotation in result["annotations"]:
        width, height = sizes[annotation["image_id"]]
        mask = rle_decode(annotation["segmentation"])
        assert mask.shape == (height, width) and mask.sum() == annotation["area"]
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        # the box is the tight box of its component's mask
        assert annotation["bbox"] == [cols[0], rows[0], cols[-1] + 1 - cols[0], rows[-1] + 1 - rows[0]]


def test_named_class_gradcam_nwc_pas(imagenet, photos):
    cfg = LocalizeConfig(classes=("tabby cat",), method="gradcam", nwc=True, normalize="percentile", rule="all",
                         input_size=160)
    result = Localizer(cfg, imagenet)(photos / "chelsea.jpg")
    assert {d.class_index for d in result.detections} == {281}
    assert all(d.box is not None for d in result.detections)
    with pytest.raises(ConfigError, match="ambiguous"):
        Localizer(LocalizeConfig(classes=("crane",)), imagenet)
    with pytest.raises(ConfigError, match="did you mean"):
        Localizer(LocalizeConfig(classes=("tabb",)), imagenet)
    assert Localizer(LocalizeConfig(classes=("n02123045", "282")), imagenet).fixed == [281, 282]


def test_scarce_and_timm_checkpoints(tmp_path, photos):
    import timm

    from scarce.models import ModelConfig, build_classifier

    torch.manual_seed(0)
    ours = build_classifier(ModelConfig(backbone="test_efficientnet", pretrained=None), 3)
    torch.save({"model": ours.state_dict(), "fingerprint": {"classes": ["ant", "bee", "cow"]}}, tmp_path / "model.pt")
    loaded = load_model(LocalizeConfig(model="test_efficientnet", weights=str(tmp_path / "model.pt")))
    assert loaded.class_names == ("ant", "bee", "cow") and loaded.multi_label
    result = Localizer(LocalizeConfig(model="test_efficientnet", top_k=2), loaded)(photos / "gray.png")
    assert len({d.class_index for d in result.detections}) == 2
    net = timm.create_model("test_efficientnet", pretrained=False, num_classes=7)
    torch.save(net.state_dict(), tmp_path / "timm.pt")
    loaded = load_model(LocalizeConfig(model="test_efficientnet", weights=str(tmp_path / "timm.pt")))
    assert loaded.class_names[-1] == "class_6" and not loaded.multi_label
    (tmp_path / "names.txt").write_text("a\nb\n")
    with pytest.raises(ConfigError, match="7 classes but 2 class names"):
        load_model(LocalizeConfig(model="test_efficientnet", weights=str(tmp_path / "timm.pt"),
                                  class_names=str(tmp_path / "names.txt")))
    with pytest.raises(ConfigError, match="not found"):
        load_model(LocalizeConfig(weights=str(tmp_path / "nope.pt")))


def test_rle_round_trip_is_column_major():
    mask = np.array([[0, 1, 1], [0, 1, 0]], dtype=bool)
    rle = rle_encode(mask)
    assert rle == {"size": [2, 3], "counts": [2, 3, 1]}  # column-major: 0,0 | 1,1 | 1,0
    assert np.array_equal(rle_decode(rle), mask)
    assert rle_encode(np.ones((2, 2), bool))["counts"] == [0, 4]
    with pytest.raises(ValueError):
        rle_decode({"size": [2, 2], "counts": [1, 2]})
