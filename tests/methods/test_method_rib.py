"""RIB: GNDP pooling, the backbone split, and per-image fine-tuning that leaves the model untouched."""

from __future__ import annotations

import pytest
import torch

from scarce.cams import CamConfig, build_cam_method
from scarce.errors import ConfigError
from scarce.methods.rib import Rib, RibOptions, gndp, split_features


def test_gndp_pools_the_non_discriminative_region():
    maps = torch.tensor([[[[1.0, 2.0], [3.0, 10.0]], [[5.0, 1.0], [1.0, 1.0]]]])
    labels = torch.tensor([[1.0, 0.0]])
    pooled = gndp(maps, labels, score_th=0.4)
    assert torch.isclose(pooled[0, 0], torch.tensor((1.0 + 2.0 + 3.0) / 4))  # 10 is ≥ 0.4 · max: left out
    assert torch.isclose(pooled[0, 1], torch.tensor(8.0 / 4))  # unlabelled class: plain average


def test_last_block_split_reproduces_the_features(tiny_model):
    x = torch.randn(2, 3, 64, 64)
    for mode in ("last_block", "all"):
        prefix, tail, run_tail = split_features(tiny_model, mode)
        assert torch.allclose(run_tail(tail, prefix(x)), tiny_model.features(x), atol=1e-6)


def test_fine_tuning_is_per_image_and_leaves_the_model_untouched(scenes_model, tiny_scenes, tmp_path):
    tiny_model = scenes_model
    from scarce.data.base import open_dataset

    train = open_dataset("scenes", tiny_scenes, "train")
    before = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    images = torch.randn(2, 3, 64, 64)  # an image and its flip, as the core passes them
    first = Rib(CamConfig(method="rib", batch_size=1), RibOptions(rib_iter=1, rib_batch=2))
    first.prepare(tiny_model, train, tmp_path)
    with torch.enable_grad():
        one = first(tiny_model, images, [1])
    with torch.no_grad():
        plain = torch.einsum("cd,bdhw->bchw", tiny_model.class_weights[[1]], tiny_model.features(images)).clamp_min(0)
    assert torch.allclose(one, plain, atol=1e-5)  # step 0's map precedes any update
    tuned = Rib(CamConfig(method="rib", batch_size=1), RibOptions(rib_iter=3, rib_batch=2, rib_lr=1e-2,
                                                                  explode_ratio=1.0))
    tuned.prepare(tiny_model, train, tmp_path)
    with torch.enable_grad():
        summed = tuned(tiny_model, images, [1])
    assert tuned.steps_taken == [3]
    assert summed.shape == plain.shape and not torch.allclose(summed, 3 * plain)  # the later steps differ
    assert all(torch.equal(v, tiny_model.state_dict()[k]) for k, v in before.items())


def test_rib_needs_one_image_per_call():
    with pytest.raises(ConfigError, match="batch_size"):
        build_cam_method(CamConfig(method="rib", batch_size=4))
    with pytest.raises(ConfigError, match="prepare"):
        build_cam_method(CamConfig(method="rib", batch_size=1))(None, torch.zeros(1, 3, 8, 8), [0])  # type: ignore[arg-type]
