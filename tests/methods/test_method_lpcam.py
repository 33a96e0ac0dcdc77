"""LPCAM: the map against the explicit cosine formula, the bounded feature reservoir, k-means and selection."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from scarce.cams import CamConfig, CamExtractor, build_cam_method
from scarce.errors import ConfigError
from scarce.methods.lpcam import LpCam, LpcamOptions, Reservoir, cosine_kmeans, select_prototypes


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(a @ b / (a.norm() * b.norm()))


def test_map_equals_the_explicit_cosine_formula(tiny_model):
    torch.manual_seed(0)
    dim = tiny_model.class_weights.shape[1]
    method = build_cam_method(CamConfig(method="lpcam"))
    method.prototypes = {
        "fg": torch.randn(3, dim), "fg_owner": torch.tensor([0, 0, 2]),
        "context": torch.randn(2, dim), "context_owner": torch.tensor([0, 3]), "num_classes": torch.tensor(4),
    }
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        maps = method(tiny_model, images, [0, 2, 3, 1])
        features = tiny_model.features(images)
    p, q = method.prototypes["fg"], method.prototypes["context"]
    for b in range(2):
        for y in range(features.shape[2]):
            for x in range(features.shape[3]):
                f = features[b, :, y, x]
                expected = {
                    0: (_cos(f, p[0]) + _cos(f, p[1])) / 2 - _cos(f, q[0]),
                    2: _cos(f, p[2]),
                    3: -_cos(f, q[1]),
                    1: 0.0,
                }
                for row, c in enumerate([0, 2, 3, 1]):
                    assert abs(float(maps[b, row, y, x]) - expected[c]) < 1e-5


def test_reservoir_holds_a_bounded_uniform_sample():
    reservoir = Reservoir(capacity=50, dim=1, seed=0)
    for start in range(0, 5000, 37):  # uneven chunks, as feature maps arrive
        reservoir.add("a", np.arange(start, min(start + 37, 5000), dtype=np.float32)[:, None])
    held = reservoir.get("a")[:, 0]
    assert held.shape == (50,) and reservoir.seen["a"] == 5000 and len(np.unique(held)) == 50
    assert reservoir.nbytes == 50 * 1 * 4  # capacity · dim · 4 bytes, whatever was offered
    # inclusion is uniform over the stream: early and late items are equally likely to be kept
    hits = np.zeros(1000)
    for seed in range(300):
        r = Reservoir(capacity=20, dim=1, seed=seed)
        for start in range(0, 1000, 64):
            r.add(0, np.arange(start, min(start + 64, 1000), dtype=np.float32)[:, None])
        hits[r.get(0)[:, 0].astype(int)] += 1
    early, late = hits[:500].mean(), hits[500:].mean()
    assert abs(early - late) < 0.15 * (early + late) / 2  # expected 300·20/1000 = 6 each


def test_prepare_respects_the_memory_bound(scenes_model, tiny_scenes, tmp_path):
    tiny_model = scenes_model
    from scarce.data.base import open_dataset

    train = open_dataset("scenes", tiny_scenes, "train")
    options = LpcamOptions(k=3, max_features=8, max_iter=5)
    method = LpCam(CamConfig(method="lpcam"), options)
    reservoir = method.collect(tiny_model, train)
    dim = tiny_model.class_weights.shape[1]
    bound = 2 * train.num_classes * options.max_features * dim * 4
    assert reservoir.nbytes <= bound
    assert all(reservoir.filled[key] <= 8 for key in reservoir.buffers)
    assert sum(reservoir.seen.values()) > 8 * len(reservoir.buffers)  # more was streamed than kept
    method.prepare(tiny_model, train, tmp_path)
    assert (tmp_path / "lpcam.pt").is_file() and method.stats["peak_reservoir_bytes"] <= bound
    again = LpCam(CamConfig(method="lpcam"), options)
    again.prepare(tiny_model, train, tmp_path)  # cached prototypes of the same model and options
    assert torch.equal(again.prototypes["fg"], method.prototypes["fg"])
    maps = again(tiny_model, torch.randn(1, 3, 64, 64), [0, 1])
    assert maps.shape[:2] == (1, 2) and torch.isfinite(maps).all()


def test_cosine_kmeans_separates_directions_and_caps_iterations():
    generator = torch.Generator().manual_seed(0)
    directions = torch.eye(4)[:3] * torch.tensor([[1.0], [5.0], [2.0]])
    x = torch.cat([d + 0.05 * torch.randn(40, 4, generator=generator) for d in directions])
    centres, labels, iterations = cosine_kmeans(x, 3, max_iter=50, tol=1e-6, generator=generator)
    assert len(torch.unique(labels)) == 3 and iterations < 50
    for group in range(3):
        assert len(torch.unique(labels[group * 40 : (group + 1) * 40])) == 1
    # centres are raw means (magnitude kept), assignment is by direction
    assert torch.allclose(centres.norm(dim=1).sort().values, torch.tensor([1.0, 2.0, 5.0]), atol=0.1)
    _, _, capped = cosine_kmeans(torch.randn(200, 8, generator=generator), 12, max_iter=2, generator=generator)
    assert capped <= 2
    few, _, _ = cosine_kmeans(torch.randn(5, 8), 12)
    assert len(few) == 5


def test_prototype_selection_by_classifier_softmax():
    weights = torch.eye(3) * 10.0
    centres = torch.tensor([[1.0, 0, 0], [0.3, 0.2, 0.0], [0, 1.0, 0]])
    prob = torch.softmax(centres @ weights.T, dim=1)[:, 0]  # [~1, 0.6, ~0]
    assert torch.equal(select_prototypes(centres, weights, 0, 0.9, None, True), centres[prob > 0.9])
    assert torch.equal(select_prototypes(centres, weights, 0, 0.05, 0.9, False), centres[1:2])
    assert torch.equal(select_prototypes(centres[1:], weights, 0, 0.9, None, True), centres[1:2])  # fallback: best


def test_lpcam_needs_prototypes_and_checks_options(tiny_model):
    with pytest.raises(ConfigError, match="prototypes"):
        build_cam_method(CamConfig(method="lpcam"))(tiny_model, torch.zeros(1, 3, 32, 32))
    with pytest.raises(ConfigError, match="unknown key"):
        build_cam_method(CamConfig(method="lpcam", options={"kk": 3}))


def test_relu_only_for_classes_with_context_prototypes(tiny_model):
    """make_lpcam: relu(class − context) when a class has context prototypes, the raw class similarity otherwise."""
    torch.manual_seed(3)
    dim = tiny_model.class_weights.shape[1]
    fg, context = torch.randn(2, dim), torch.randn(1, dim)
    method = build_cam_method(CamConfig(method="lpcam"))
    method.prototypes = {"fg": fg, "fg_owner": torch.tensor([0, 1]), "context": context,
                         "context_owner": torch.tensor([0]), "num_classes": torch.tensor(2)}
    images = torch.randn(1, 3, 64, 64)
    cfg = CamConfig(method="lpcam", scales=(1.0,), flip=False, normalize="none")
    with torch.no_grad():
        maps = CamExtractor(tiny_model, cfg, method)(images, [1, 0])
        features = tiny_model.features(images)[0]
    # the reference: one pixel at a time, torch's cosine_similarity, upsampled like the core
    h, w = features.shape[-2:]
    expected = torch.zeros(2, h, w)
    for y in range(h):
        for x in range(w):
            f = features[:, y, x]
            expected[0, y, x] = F.cosine_similarity(f, fg[1], dim=0)  # class 1: no context, no ReLU
            expected[1, y, x] = max(0.0, float(F.cosine_similarity(f, fg[0], dim=0) - F.cosine_similarity(f, context[0], dim=0)))
    expected = F.interpolate(expected[None], size=(64, 64), mode="bilinear", align_corners=False)
    assert torch.allclose(maps, expected, atol=1e-5)
    assert float(maps[0, 0].min()) < 0 and float(maps[0, 1].min()) >= 0  # the case distinguishes the two
