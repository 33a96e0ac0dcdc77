"""Affinity random walk: the neighbourhood walk against the dense (HW)² formulation, affinity labels and
the loss by hand, and a killed affinity training resumed to the same weights."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from scarce.cams.store import save_cam
from scarce.data.base import open_dataset
from scarce.errors import ConfigError
from scarce.models import ModelConfig, build_classifier
from scarce.refinement import RefineContext, RefineStep, build_refiner
from scarce.refinement import random_walk as rw_module
from scarce.refinement.affinity import (affinity_labels, balanced_affinity_loss, disc_offsets, half_disc_offsets,
                                        pair_affinities, to_grid)
from scarce.refinement.random_walk import random_walk


def dense_walk(features: torch.Tensor, cams: torch.Tensor, radius: int, beta: float, exp_times: int) -> torch.Tensor:
    """IRN's formulation, written out: the dense affinity matrix of every pixel pair within the radius,
    A^β divided by its column sums, raised to 2^exp_times, applied to the maps as row vectors."""
    _, height, width = features.shape
    pixels = [(y, x) for y in range(height) for x in range(width)]
    n = len(pixels)
    affinity = torch.zeros(n, n, dtype=torch.float64)
    for i, (yi, xi) in enumerate(pixels):
        for j, (yj, xj) in enumerate(pixels):
            if (yi - yj) ** 2 + (xi - xj) ** 2 < radius ** 2:
                distance = (features[:, yi, xi].double() - features[:, yj, xj].double()).abs().mean()
                affinity[i, j] = torch.exp(-distance)
    scaled = affinity ** beta
    transition = scaled / scaled.sum(dim=0, keepdim=True)
    walked = cams.double().reshape(cams.shape[0], n) @ torch.linalg.matrix_power(transition, 2 ** exp_times)
    return walked.reshape(cams.shape)


@pytest.mark.parametrize("height,width,radius,beta,exp_times,scale", [
    (5, 7, 3, 10.0, 3, 0.2),   # odd sizes, IRN's β
    (6, 6, 5, 10.0, 8, 0.1),   # IRN's radius, β and exp_times (t = 256)
    (3, 4, 6, 2.0, 4, 1.0),    # radius larger than the map: every pair is a neighbour
    (1, 9, 2, 10.0, 5, 0.3),   # a single row
])
def test_neighbourhood_walk_equals_dense_matrix_power(height, width, radius, beta, exp_times, scale):
    generator = torch.Generator().manual_seed(height * 100 + width)
    features = scale * torch.randn(4, height, width, generator=generator)
    cams = torch.rand(2, height, width, generator=generator)
    affinities = pair_affinities(features[None], disc_offsets(radius))
    walked = random_walk(cams[None], affinities, radius, beta, exp_times)[0]
    expected = dense_walk(features, cams, radius, beta, exp_times)
    assert walked.dtype == torch.float32
    assert (walked.double() - expected).abs().max() <= 1e-5
    # the walk has moved the maps (the comparison is not of two untouched inputs)
    assert (expected - cams.double()).abs().max() > 1e-2


def test_offsets_are_the_open_disc_of_psa_and_irn():
    # PSA's radius-5 pair list has 34 directions; the walk adds their opposites and the pixel itself
    assert len(half_disc_offsets(5)) == 34
    assert half_disc_offsets(2) == [(0, 1), (1, -1), (1, 0), (1, 1)]
    assert sorted(disc_offsets(2)) == sorted([(0, 0), (0, 1), (0, -1), (1, 0), (-1, 0), (1, 1), (-1, -1), (1, -1), (-1, 1)])


def test_affinity_labels_of_a_hand_made_seed_map():
    seeds = torch.tensor([[[0, 1, 255],
                           [0, 2, 1]]])
    offsets = half_disc_offsets(2)  # (0,1), (1,-1), (1,0), (1,1)
    bg, fg, neg = affinity_labels(seeds, offsets)

    def pairs(mask: torch.Tensor) -> set[tuple[tuple[int, int], tuple[int, int]]]:
        return {((y, x), (y + offsets[o][0], x + offsets[o][1])) for o, y, x in mask[0].nonzero().tolist()}

    assert pairs(bg) == {((0, 0), (1, 0))}
    assert pairs(fg) == {((0, 1), (1, 2))}  # class 1 with class 1, diagonally
    assert pairs(neg) == {((0, 0), (0, 1)), ((0, 0), (1, 1)), ((0, 1), (1, 0)), ((0, 1), (1, 1)),
                          ((1, 0), (1, 1)), ((1, 1), (1, 2))}  # includes class 2 against class 1
    # nothing touches the ignored pixel (0, 2)


def test_balanced_loss_by_hand():
    aff = torch.tensor([0.5, 0.9, 0.2, 0.7])
    bg, fg, neg = torch.tensor([1.0, 0, 0, 0]), torch.tensor([0, 1.0, 0, 0]), torch.tensor([0, 0, 1.0, 1.0])
    expected = (-math.log(0.5 + 1e-5) / (1 + 1e-5)) / 4 + (-math.log(0.9 + 1e-5) / (1 + 1e-5)) / 4 \
        + ((-math.log(1 + 1e-5 - 0.2) - math.log(1 + 1e-5 - 0.7)) / (2 + 1e-5)) / 2
    assert float(balanced_affinity_loss(aff, bg, fg, neg)) == pytest.approx(expected, rel=1e-6)


def test_grid_means_cover_only_the_pixels_a_cell_holds():
    maps = torch.arange(30, dtype=torch.float32).reshape(1, 6, 5)  # 6x5 → 2x2 cells, the last ones partial
    grid = to_grid(maps)[0]
    assert grid[0, 0] == pytest.approx(np.mean([r * 5 + c for r in range(4) for c in range(4)]))
    assert grid[0, 1] == pytest.approx(np.mean([r * 5 + 4 for r in range(4)]))
    assert grid[1, 0] == pytest.approx(np.mean([r * 5 + c for r in (4, 5) for c in range(4)]))
    assert grid[1, 1] == pytest.approx(np.mean([24, 29]))


class Killed(Exception):
    pass


STEP = RefineStep("random_walk", {"train": {"epochs": 2, "batch_size": 8, "level_dim": 8, "embed_dim": 16,
                                            "crop_size": 48, "seed": 3}})


@pytest.fixture(scope="module")
def context_for(tiny_scenes, tmp_path_factory):
    """Contexts sharing a classifier and seed CAMs (the ground-truth masks, so the seeds hold every label)."""
    root = tmp_path_factory.mktemp("random_walk")
    data = {split: open_dataset("scenes", tiny_scenes, split) for split in ("train", "val")}
    for sample in data["train"].samples:
        mask = data["train"].load_mask(sample)
        cams = np.stack([(mask == c + 1).astype(np.float32) for c in sample.labels]) if sample.labels else \
            np.zeros((0, *mask.shape), np.float32)
        save_cam(root / "cams" / "train" / f"{sample.stem}.npz", cams, list(sample.labels))
    torch.manual_seed(0)
    model = build_classifier(ModelConfig(backbone="test_efficientnet", pretrained=None), data["train"].num_classes).eval()

    def make(work: str, confident: tuple[float, float] = (0.5, 0.2)) -> RefineContext:
        return RefineContext(model=model, datasets=data.__getitem__, cam_dir=lambda split: root / "cams" / split,
                             work_dir=root / work, confident=confident, progress=False)
    return make


@pytest.fixture(scope="module")
def straight(context_for):
    """A refiner whose affinity network trained its two epochs without interruption."""
    refiner = build_refiner(STEP)
    refiner.prepare(context_for("straight"))
    return refiner


def test_killed_training_resumes_to_the_same_weights(context_for, straight, monkeypatch):
    def kill(epoch: int) -> None:
        if epoch == 1:
            raise Killed

    train = rw_module.train_affinity
    monkeypatch.setattr(rw_module, "train_affinity", lambda *args, **kwargs: train(*args, **kwargs, on_epoch=kill))
    with pytest.raises(Killed):
        build_refiner(STEP).prepare(context_for("killed"))
    monkeypatch.undo()
    work = context_for("killed").work_dir / "random_walk"
    assert (work / "checkpoint.pt").exists() and not (work / "affinity.pt").exists()
    after_one_epoch = torch.load(work / "checkpoint.pt", weights_only=True)
    assert after_one_epoch["epoch"] == 1

    resumed = build_refiner(STEP)
    resumed.prepare(context_for("killed"))  # a new object: continues from the epoch-1 checkpoint
    a, b = straight.net.state_dict(), resumed.net.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert any(not torch.equal(a[k], after_one_epoch["net"][k]) for k in a)  # the second epoch did train

    loaded = build_refiner(STEP)
    loaded.prepare(context_for("killed"))  # affinity.pt is there now: loaded, not retrained
    assert all(torch.equal(a[k], loaded.net.state_dict()[k]) for k in a)
    with pytest.raises(ConfigError, match=r"random_walk.*\(confident\)"):
        build_refiner(STEP).prepare(context_for("killed", confident=(0.6, 0.2)))


def test_prepare_needs_the_confident_thresholds(context_for):
    with pytest.raises(ConfigError, match="confident"):
        build_refiner(STEP).prepare(context_for("none", confident=None))


def test_refined_maps_keep_shapes_and_irn_normalisation(straight):
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(2, 3, 30, 22, generator=generator)
    cams = [torch.rand(2, 30, 22, generator=generator), torch.zeros(0, 30, 22)]
    out = straight(images, cams, [[0, 2], []])
    assert [tuple(o.shape) for o in out] == [(2, 30, 22), (0, 30, 22)]
    assert float(out[0].min()) >= 0 and float(out[0].max()) == pytest.approx(1.0)  # IRN: divided by the joint max
    assert torch.equal(straight(images[:1], [torch.zeros(1, 30, 22)], [[1]])[0], torch.zeros(1, 30, 22))
    # an image walks the same alone as in a batch where it has fewer maps (padded with zeros); the backbone's
    # batched convolutions round differently in the last bits, which β = 10 amplifies to ~1e-4
    alone = straight(images[1:], [cams[0][:1]], [[0]])[0]
    together = straight(torch.cat([images[1:], images[:1]]), [cams[0][:1], cams[0]], [[0], [0, 2]])[0]
    assert (alone - together).abs().max() < 1e-3
    assert (alone - straight(images[1:], [cams[0][1:]], [[2]])[0]).abs().max() > 1e-2  # its own map, not another
