import numpy as np
import pytest
from PIL import Image

from scarce.io import read_label_png
from scarce.pseudo import cams_to_confident_labels, cams_to_labels, save_label_png, top_class, voc_palette

# pixel 0: both classes 0.3 (first plane wins, key 2 -> 3); pixel 1: 0.5 -> 3; pixel 2: 0.7 -> key 0 -> 1
CAMS = np.array([[[0.3, 0.5, 0.2]], [[0.3, 0.4, 0.7]]], dtype=np.float32)
KEYS = [2, 0]


@pytest.mark.parametrize(
    "threshold, expected",
    [(0.29, [[3, 3, 1]]), (0.3, [[0, 3, 1]]), (0.5, [[0, 0, 1]]), (0.7, [[0, 0, 0]])],
)
def test_cams_to_labels_background_wins_ties(threshold, expected):
    labels = cams_to_labels(CAMS, KEYS, threshold)
    assert labels.dtype == np.uint8
    np.testing.assert_array_equal(labels, expected)


def test_threshold_is_compared_in_the_cam_dtype():
    # float32(0.15) > 0.15 in float64, but IRN's float32 background plane makes it a tie, won by background
    cams = np.full((1, 1, 1), 0.15, dtype=np.float32)
    assert cams_to_labels(cams, [0], 0.15)[0, 0] == 0
    assert cams_to_labels(cams.astype(np.float64), [0], 0.1499)[0, 0] == 1


def test_image_without_classes_is_all_background():
    np.testing.assert_array_equal(cams_to_labels(np.zeros((0, 2, 3)), [], 0.1), np.zeros((2, 3)))
    score, labels = top_class(np.zeros((0, 2, 3), np.float32), [])
    assert np.isneginf(score).all() and score.dtype == np.float32 and not labels.any()


def test_confident_labels_keep_sure_regions_and_ignore_the_band():
    cams = np.array([[[0.1, 0.2, 0.3, 0.5, 0.6]]], dtype=np.float32)
    labels = cams_to_confident_labels(cams, [4], fg_threshold=0.5, bg_threshold=0.2)
    np.testing.assert_array_equal(labels, [[0, 0, 255, 255, 5]])
    same = cams_to_confident_labels(cams, [4], fg_threshold=0.2, bg_threshold=0.2)
    np.testing.assert_array_equal(same, [[0, 0, 5, 5, 5]])


def test_confident_labels_reject_fg_below_bg():
    with pytest.raises(ValueError, match="fg_threshold"):
        cams_to_confident_labels(CAMS, KEYS, fg_threshold=0.1, bg_threshold=0.2)


@pytest.mark.parametrize(
    "cams, keys, message",
    [
        (np.zeros((2, 3)), [0], "shape"),
        (np.zeros((2, 2, 2)), [0], "2 CAM planes"),
        (np.zeros((1, 2, 2)), [254], "keys"),
        (np.full((1, 2, 2), np.nan), [0], "NaN"),
    ],
)
def test_bad_cams_raise(cams, keys, message):
    with pytest.raises(ValueError, match=message):
        cams_to_labels(cams, keys, 0.1)


def test_voc_palette_known_colours():
    palette = voc_palette()
    assert palette.shape == (256, 3) and palette.dtype == np.uint8
    assert palette[0].tolist() == [0, 0, 0]
    assert palette[1].tolist() == [128, 0, 0]
    assert palette[2].tolist() == [0, 128, 0]
    assert palette[15].tolist() == [192, 128, 128]  # person
    assert palette[20].tolist() == [0, 64, 128]  # tv/monitor
    assert palette[255].tolist() == [224, 224, 192]
    assert len({tuple(colour) for colour in palette.tolist()}) == 256


def test_save_label_png_round_trips_with_and_without_palette(tmp_path):
    labels = np.array([[0, 1, 15], [20, 255, 2]], dtype=np.uint8)
    save_label_png(tmp_path / "a.png", labels)
    save_label_png(tmp_path / "b.png", labels.astype(np.int64), palette=False)
    with Image.open(tmp_path / "a.png") as image:
        assert image.mode == "P"
        assert np.asarray(image.convert("RGB"))[0, 2].tolist() == [192, 128, 128]
    with Image.open(tmp_path / "b.png") as image:
        assert image.mode == "L"
    np.testing.assert_array_equal(read_label_png(tmp_path / "a.png"), labels)
    np.testing.assert_array_equal(read_label_png(tmp_path / "b.png"), labels)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.png"]  # no temporary file left


def test_save_label_png_rejects_values_beyond_8_bits(tmp_path):
    with pytest.raises(ValueError, match="8 bits"):
        save_label_png(tmp_path / "x.png", np.array([[0, 300]]))
    assert not (tmp_path / "x.png").exists()
