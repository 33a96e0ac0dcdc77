"""Mask sources: every bad pseudo-mask file is refused before training, naming the file; augmentation
moves an image and its label map together."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from scarce.data.base import open_dataset
from scarce.errors import DataError
from scarce.io import read_label_png, save_label_png
from scarce.segmentation import GROUND_TRUTH, train_segmenter
from scarce.segmentation.data import MaskedImages, mask_dataset
from scarce.training.transforms import AugmentConfig, augment, augment_pair

from seg_helpers import tiny_config


@pytest.fixture
def four(tiny_scenes):
    data = open_dataset("scenes", tiny_scenes, "train")
    return data.subset(data.samples[:4])


@pytest.fixture
def pseudo_dir(four, tmp_path):
    """Valid pseudo masks: the ground truth with a band of 255, written as save_label_png writes them."""
    folder = tmp_path / "pseudo"
    for sample in four.samples:
        mask = four.load_mask(sample).copy()
        mask[:, :5] = 255
        save_label_png(folder / f"{sample.stem}.png", mask)
    return folder


def _fails_before_training(four, folder, tmp_path, bad_file, problem):
    steps = []
    with pytest.raises(DataError, match=problem) as error:
        train_segmenter(tiny_config(), four, folder, tmp_path / "run", progress=False,
                        on_step=lambda epoch, step: steps.append(step))
    assert error.value.path == bad_file
    assert steps == [] and not (tmp_path / "run" / "checkpoint.pt").exists()


def test_pseudo_masks_are_read_as_written(four, pseudo_dir):
    masks = mask_dataset(four, pseudo_dir)
    assert [s.stem for s in masks.samples] == [s.stem for s in four.samples]
    for sample, mask_sample in zip(four.samples, masks.samples):
        expected = np.asarray(Image.open(pseudo_dir / f"{sample.stem}.png"))  # PIL's own reading of the indices
        np.testing.assert_array_equal(masks.load_mask(mask_sample), expected)
        assert (expected[:, :5] == 255).all()


def test_missing_pseudo_mask(four, pseudo_dir, tmp_path):
    bad = pseudo_dir / f"{four.samples[2].stem}.png"
    bad.unlink()
    _fails_before_training(four, pseudo_dir, tmp_path, bad, "not found")


def test_pseudo_mask_of_wrong_size(four, pseudo_dir, tmp_path):
    bad = pseudo_dir / f"{four.samples[1].stem}.png"
    save_label_png(bad, np.zeros((32, 64), dtype=np.uint8))
    _fails_before_training(four, pseudo_dir, tmp_path, bad, "label map is 64x32")


def test_pseudo_mask_values_above_the_classes(four, pseudo_dir, tmp_path):
    bad = pseudo_dir / f"{four.samples[3].stem}.png"
    mask = read_label_png(bad)
    mask[0, 0] = four.num_classes + 1  # one above the last class; 255 elsewhere stays allowed
    save_label_png(bad, mask)
    _fails_before_training(four, pseudo_dir, tmp_path, bad, rf"values \[{four.num_classes + 1}\] exceed")


def test_unreadable_pseudo_mask(four, pseudo_dir, tmp_path):
    bad = pseudo_dir / f"{four.samples[0].stem}.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    _fails_before_training(four, pseudo_dir, tmp_path, bad, "cannot read label map")


def test_missing_pseudo_mask_folder(four, tmp_path):
    _fails_before_training(four, tmp_path / "nowhere", tmp_path, tmp_path / "nowhere", "folder not found")


def test_ground_truth_source_is_the_datasets_masks(four):
    assert mask_dataset(four, GROUND_TRUTH) is four


def test_augmentation_moves_image_and_mask_together():
    h, w = 20, 28
    mask = torch.from_numpy(np.random.default_rng(0).integers(0, 5, (h, w))).long()
    image = mask.float()[None].repeat(3, 1, 1)  # the image shows its own labels
    cfg = AugmentConfig(crop_size=32, scale_range=(1.0, 1.0), hflip=True)  # scale 1: bilinear is exact
    flips = set()
    for seed in range(6):
        out, out_mask = augment_pair(image, mask, cfg, np.random.default_rng(seed))
        inside = out_mask != 255
        assert int(inside.sum()) == h * w  # the crop is larger than the image: all of it, padded with 255
        torch.testing.assert_close(out[0][inside], out_mask[inside].float(), rtol=0, atol=1e-6)
        assert (out[:, ~inside] == 0).all()
        flips.add(torch.equal(out_mask[inside].view(h, w), mask.flip(-1)))
    assert flips == {True, False}


def test_pair_augmentation_draws_like_image_augmentation():
    """The classifier's augmentation (and so its runs) is unchanged by the label-map variant."""
    image = torch.randn(3, 40, 50, generator=torch.Generator().manual_seed(1))
    cfg = AugmentConfig(crop_size=32, scale_range=(0.5, 2.0))
    for seed in range(4):
        alone = augment(image, cfg, np.random.default_rng(seed))
        paired, _ = augment_pair(image, torch.zeros(40, 50, dtype=torch.long), cfg, np.random.default_rng(seed))
        assert torch.equal(alone, paired)


def test_pairs_have_crop_shapes_and_mask_labels(four, pseudo_dir):
    cfg = tiny_config()
    pairs = MaskedImages(four, mask_dataset(four, pseudo_dir), ((0.5,) * 3, (0.5,) * 3), cfg.train.augment, seed=0)
    image, mask = pairs[0]
    assert image.shape == (3, 64, 64) and mask.shape == (64, 64) and mask.dtype == torch.int64
    allowed = set(range(four.num_classes + 1)) | {255}
    assert set(mask.unique().tolist()) <= allowed
