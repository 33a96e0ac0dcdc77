"""PAMR against a plain per-pixel loop written from the official module's definition."""

from __future__ import annotations

import math

import pytest
import torch

from scarce.errors import ConfigError
from scarce.refinement import RefinerChain, build_refiner


def loop_pamr(image: torch.Tensor, masks: torch.Tensor, dilations, iterations: int, sigma: float) -> torch.Tensor:
    """One image, pixel by pixel, in float64: clamped indices are the replicate border."""
    img = image.double().tolist()
    m = masks.double().tolist()
    channels, height, width = len(img), len(img[0]), len(img[0][0])
    at = lambda grid, y, x: grid[min(max(y, 0), height - 1)][min(max(x, 0), width - 1)]
    offsets = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
    weights = [[None] * width for _ in range(height)]
    for y in range(height):
        for x in range(width):
            kappa = [0.0] * (8 * len(dilations))
            for c in range(channels):
                values = [at(img[c], y + dy * d, x + dx * d) for d in dilations for dy, dx in offsets]
                mean = sum(values) / len(values)
                std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
                taps = [at(img[c], y + dy * d, x + dx * d) for d in dilations for dy, dx in offsets if (dy, dx) != (0, 0)]
                for t, v in enumerate(taps):
                    kappa[t] += -abs(v - img[c][y][x]) / (1e-8 + sigma * std) / channels
            top = max(kappa)
            exps = [math.exp(k - top) for k in kappa]
            weights[y][x] = [e / sum(exps) for e in exps]
    for _ in range(iterations):
        new = []
        for plane in m:
            out = [[0.0] * width for _ in range(height)]
            for y in range(height):
                for x in range(width):
                    taps = [at(plane, y + dy * d, x + dx * d) for d in dilations for dy, dx in offsets if (dy, dx) != (0, 0)]
                    out[y][x] = sum(w * v for w, v in zip(weights[y][x], taps))
            new.append(out)
        m = new
    return torch.tensor(m, dtype=torch.float64)


@pytest.fixture
def batch():
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(2, 3, 6, 7, generator=gen)
    images[0, :, :, 4:] += 0.8  # a colour edge the weights must respect
    images = images.clamp(0, 1)
    cams = [torch.rand(2, 6, 7, generator=gen), torch.rand(1, 6, 7, generator=gen)]
    return images, cams, [[1, 3], [2]]


def test_pamr_equals_plain_loop(batch):
    images, cams, keys = batch
    refiner = build_refiner("pamr")
    out = refiner(images, cams, keys)
    for image, cam, got in zip(images, cams, out):
        expected = loop_pamr(image, cam, (1, 2, 4, 8, 12, 24), 10, 0.1)
        assert got.shape == cam.shape
        assert torch.allclose(got.double(), expected, atol=1e-5)


def test_pamr_options_equal_plain_loop(batch):
    images, cams, keys = batch
    refiner = build_refiner("pamr")
    refiner = type(refiner)({"dilations": [1, 3], "iterations": 3, "sigma": 0.25})
    out = refiner(images, cams, keys)
    for image, cam, got in zip(images, cams, out):
        assert torch.allclose(got.double(), loop_pamr(image, cam, (1, 3), 3, 0.25), atol=1e-5)


def test_pamr_batch_padding_does_not_leak(batch):
    """Image 1 has one class and is padded to two inside the batch: alone it gives the same maps."""
    images, cams, keys = batch
    refiner = build_refiner("pamr")
    together = refiner(images, cams, keys)
    alone = refiner(images[1:], cams[1:], keys[1:])
    assert torch.allclose(together[1], alone[0], atol=1e-6)


def test_pamr_composes_and_checks_options(batch):
    images, cams, keys = batch
    twice = RefinerChain(["pamr", "pamr"])(images, cams, keys)
    assert all(0.0 <= float(t.min()) and float(t.max()) <= 1.0 for t in twice)
    with pytest.raises(ConfigError, match="iteration"):
        build_refiner("pamr").__class__({"iteration": 3})
    with pytest.raises(ValueError, match="classes"):
        build_refiner("pamr")(images, [cams[0], cams[0]], keys)
