"""Inference: multi-scale + flip equals a hand average, refiners plug in through the registry, and split
scores equal a plain per-class count on the written label maps."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from scarce.data.base import open_dataset
from scarce.io import read_label_png
from scarce.refinement import REFINERS, Refiner, RefineStep, build_refiner
from scarce.segmentation import SegmentConfig, evaluate_split, predict_labels, predict_probabilities
from scarce.training.transforms import to_tensor

MEAN_STD = ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


class ToySegmenter(nn.Module):
    """One 3×3 convolution (zero padding), not flip-symmetric; needs inputs padded to multiples of 16."""

    input_multiple = 16
    mean_std = MEAN_STD

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.conv = nn.Conv2d(3, num_classes + 1, 3, padding=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        assert images.shape[-2] % 16 == 0 and images.shape[-1] % 16 == 0
        return self.conv(images)


def test_multiscale_flip_is_the_average_of_the_views():
    model = ToySegmenter(3)
    image = torch.randn(3, 21, 30, generator=torch.Generator().manual_seed(0))  # sides not multiples of 16
    scales = (1.0, 0.75, 1.25)
    got = predict_probabilities(model, image, scales, flip=True)

    weight, bias = model.conv.weight.detach(), model.conv.bias.detach()
    views = []
    for scale in scales:  # by hand: no padding, each view convolved, flipped back, upsampled, softmax
        size = (round(21 * scale), round(30 * scale))
        scaled = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False)
        for flipped in (False, True):
            x = scaled.flip(-1) if flipped else scaled
            logits = F.conv2d(x, weight, bias, padding=1)
            logits = logits.flip(-1) if flipped else logits
            logits = F.interpolate(logits, size=(21, 30), mode="bilinear", align_corners=False)
            views.append(torch.softmax(logits[0], dim=0))
    expected = sum(views) / 6
    assert got.shape == (4, 21, 30)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    assert not torch.allclose(views[0], views[1], atol=1e-3)  # the flip is not a no-op for this model
    torch.testing.assert_close(predict_probabilities(model, image, (1.0,), flip=False), views[0], rtol=0, atol=1e-6)


class Recorder(Refiner):
    """Test-only refiner: records its inputs and returns ``factor`` × its maps."""

    calls: list = []

    def __call__(self, images, cams, keys):
        Recorder.calls.append((images, [c.clone() for c in cams], [list(k) for k in keys]))
        return [c * self.options.get("factor", 1.0) for c in cams]


@pytest.fixture
def recorder(monkeypatch):
    monkeypatch.setitem(REFINERS, "test_recorder", Recorder)
    monkeypatch.setattr(Recorder, "calls", [])
    monkeypatch.setattr(Recorder, "name", "test_recorder")
    return Recorder


def test_refiner_sees_the_image_and_the_predicted_classes(recorder):
    model = ToySegmenter(3)
    image = np.random.default_rng(1).integers(0, 256, (20, 24, 3), dtype=np.uint8)
    cfg = SegmentConfig(scales=(1.0, 0.5), flip=True)
    plain = predict_labels(model, image, cfg)
    probabilities = predict_probabilities(model, to_tensor(image, MEAN_STD), cfg.scales, cfg.flip)
    present = sorted(int(v) for v in np.unique(plain) if v > 0)
    assert len(present) >= 2

    same = predict_labels(model, image, cfg, build_refiner("test_recorder"))
    np.testing.assert_array_equal(same, plain)  # a refiner returning its input changes nothing
    (images, cams, keys), = recorder.calls
    torch.testing.assert_close(images[0], torch.from_numpy(image).permute(2, 0, 1).float() / 255, rtol=0, atol=0)
    assert keys == [[label - 1 for label in present]]
    torch.testing.assert_close(cams[0], probabilities[present], rtol=0, atol=1e-6)


def test_refined_maps_compete_with_the_background(recorder):
    model = ToySegmenter(3)
    image = np.random.default_rng(1).integers(0, 256, (20, 24, 3), dtype=np.uint8)
    cfg = SegmentConfig(scales=(1.0,), flip=False)
    probabilities = predict_probabilities(model, to_tensor(image, MEAN_STD), cfg.scales, cfg.flip).numpy()
    plain = probabilities.argmax(0)
    halved = predict_labels(model, image, cfg, build_refiner(RefineStep("test_recorder", {"factor": 0.5})))
    expected = np.zeros_like(plain)  # by hand: a predicted class keeps a pixel if half its probability beats bg
    for y in range(plain.shape[0]):
        for x in range(plain.shape[1]):
            label = plain[y, x]
            if label > 0 and 0.5 * probabilities[label, y, x] > probabilities[0, y, x]:
                expected[y, x] = label
    assert (expected != plain).any() and (expected > 0).any()
    np.testing.assert_array_equal(halved, expected)


def test_evaluate_split_scores_and_writes_the_label_maps(tiny_scenes, tmp_path):
    data = open_dataset("scenes", tiny_scenes, "val")
    model = ToySegmenter(data.num_classes)
    with torch.no_grad():  # a model that finds bright pixels: background dark, class 1 bright
        model.conv.weight.zero_()
        model.conv.bias.zero_()
        model.conv.weight[2, :, 1, 1] = 1.0
    cfg = SegmentConfig(scales=(1.0,), flip=False)
    scores = evaluate_split(model, data, cfg, out_dir=tmp_path / "pred", progress=False)

    inter = np.zeros(data.num_classes + 1)
    union = np.zeros(data.num_classes + 1)
    for sample in data.samples:  # plain per-class counts on the written files
        pred = read_label_png(tmp_path / "pred" / f"{sample.stem}.png")
        gt = data.load_mask(sample)
        valid = gt != 255
        for c in range(data.num_classes + 1):
            inter[c] += np.sum((pred == c) & (gt == c) & valid)
            union[c] += np.sum(((pred == c) | (gt == c)) & valid)
    iou = [i / u for i, u in zip(inter, union) if u > 0]
    assert scores["miou"] == pytest.approx(np.mean(iou), abs=1e-12)
    assert {"iou", "fp", "fn"} <= set(scores)
    assert 0 < scores["miou"] < 1


def test_split_prediction_applies_the_configured_refiners(tiny_scenes, recorder):
    data = open_dataset("scenes", tiny_scenes, "val")
    model = ToySegmenter(data.num_classes)
    plain = evaluate_split(model, data, SegmentConfig(scales=(1.0,), flip=False), progress=False)
    refined = evaluate_split(model, data, SegmentConfig(scales=(1.0,), flip=False, refine=("test_recorder",)),
                             progress=False)
    assert len(recorder.calls) == len(data.samples)  # every image has predicted classes under this toy model
    assert refined["confusion"] == plain["confusion"]
