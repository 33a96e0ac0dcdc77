"""RIB: GNDP pooling, the backbone split, the fine-tuning loop and both early-stop rules by hand, one tuning for all scales."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from scarce.cams import CamConfig, CamExtractor, build_cam_method
from scarce.errors import ConfigError
from scarce.methods.rib import Rib, RibOptions, gndp, loss_views, split_features, stop_value
from scarce.models.classifier import CamModel
from scarce.training.transforms import to_tensor


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


class PixelHead(CamModel):
    """A parameter-free backbone (features = the 1-channel image) under a 2-class head W = (1, 1): RIB then only
    tunes W, and every logit, gradient and step is hand-computable."""

    num_classes = 2

    def __init__(self) -> None:
        super().__init__()
        self.backbone = torch.nn.Identity()
        self.weight = torch.nn.Parameter(torch.ones(2, 1))

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone(images)

    @property
    def class_weights(self) -> torch.Tensor:
        return self.weight


IMAGE = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
PAIR = torch.cat([IMAGE, IMAGE.flip(-1)])  # the core's [image; flip(image)]


def _rib(**options) -> Rib:
    settings = {"rib_iter": 2, "rib_lr": 0.1, "head_lr_mult": 10.0, "weight_decay": 0.0, "rib_batch": 1,
                "tune": "all", **options}
    method = Rib(CamConfig(method="rib", batch_size=1, scales=(1.0,)), RibOptions(**settings))
    # one disjoint image [[4, 1], [1, 1]] of class 1: its GNDP leaves out the 4 (≥ 0.4 · max) → W_1 · 3/4
    method.pool_inputs, method.pool_labels = torch.tensor([[[[4.0, 1.0], [1.0, 1.0]]]]), torch.tensor([[0.0, 1.0]])
    return method


def test_fine_tuning_loop_against_a_hand_computation():
    # target class 0: in each view only the pixel 1 is below 0.4 · max, so GNDP_0 = W_0 · 1/4 per view;
    # L = −2 · W_0/4 − 3/4 · W_1 → gradients (−1/2, −3/4); head lr 0.1 · 10 = 1 at step 0 (poly factor 1)
    model = PixelHead()
    method = _rib(stop_th=1e9, explode_ratio=1.0)
    maps = method(model, PAIR, [0])
    assert method.steps_taken == [2] and method.stop_reasons == ["iterations"]
    # maps of step 0 (W_0 = 1) and step 1 (W_0 = 1 + 1/2) are summed, per view
    assert torch.allclose(maps[:, 0], 2.5 * PAIR[:, 0])
    assert torch.equal(model.weight, torch.ones(2, 1))  # the model itself never moves
    decayed = _rib(stop_th=1e9, explode_ratio=1.0, weight_decay=0.1)(model, PAIR, [0])
    assert torch.allclose(decayed[:, 0], (1 + (1 + 0.5 - 0.1)) * PAIR[:, 0])  # W_0 ← 1 − (−1/2 + 0.1 · 1)


def test_stop_rule_on_the_target_logits_of_the_loss_views():
    # step 0's target logits: 1/4 in each of the 2 views = 1/2, i.e. 1.5 on RIB's 6-row scale
    model = PixelHead()
    stopped, going = _rib(stop_th=1.4, explode_ratio=1.0), _rib(stop_th=1.6, explode_ratio=1.0)
    assert torch.allclose(stopped(model, PAIR, [0])[:, 0], PAIR[:, 0]) and stopped.steps_taken == [1]
    assert stopped.stop_reasons == ["stop_th"]
    going(model, PAIR, [0])
    # step 1 (W_0 = 1.5): 2 · 1.5/4 = 0.75, 2.25 on RIB's scale, so the rule fires on the last step too
    assert going.steps_taken == [2] and going.stop_reasons == ["stop_th"]
    assert loss_views((1.0, 0.5, 1.5, 2.0)) == [0, 2, 3] and loss_views((0.5,)) == [0]  # RIB drops its 0.5 scale
    assert stop_value(-100.0, 6) == 100.0 and stop_value(50.0, 2) == 150.0


def test_explode_rule_on_the_flip_summed_map_from_the_second_step():
    # normalised flip-summed map [[.25, .5], [.75, 1]]: 3 of 4 pixels exceed 0.3
    model = PixelHead()
    exploded = _rib(rib_iter=5, stop_th=1e9, explode_ratio=0.7)
    maps = exploded(model, PAIR, [0])
    assert exploded.steps_taken == [2]  # checked from step 1 on, after that step's map was added
    assert exploded.stop_reasons == ["explode"]
    assert torch.allclose(maps[:, 0], 2.5 * PAIR[:, 0])
    kept = _rib(rib_iter=3, stop_th=1e9, explode_ratio=0.75)  # 3/4 is not more than 0.75
    kept(model, PAIR, [0])
    assert kept.steps_taken == [3] and kept.stop_reasons == ["iterations"]
    # the first view alone would explode, the flip-summed map [[1, 2], [43, 4]] (1 pixel of 4 above 0.3) does not
    lopsided = torch.cat([IMAGE, torch.tensor([[[[0.0, 0.0], [0.0, 40.0]]]])])
    summed = _rib(rib_iter=3, stop_th=1e9, explode_ratio=0.7)
    summed(model, lopsided, [0])
    assert summed.steps_taken == [3]


def test_one_fine_tuning_serves_all_scales(scenes_model, tiny_scenes, tmp_path):
    from scarce.data.base import open_dataset

    train = open_dataset("scenes", tiny_scenes, "train")
    before = {k: v.clone() for k, v in scenes_model.state_dict().items()}
    cfg = CamConfig(method="rib", batch_size=1, scales=(1.0, 0.5), options={"rib_iter": 3, "rib_batch": 2,
                                                                           "rib_lr": 1e-2, "explode_ratio": 1.0})
    method = build_cam_method(cfg)
    method.prepare(scenes_model, train, tmp_path)
    image = torch.randn(1, 3, 64, 64)
    cams = CamExtractor(scenes_model, cfg, method)(image, [1])
    assert method.steps_taken == [3] and cams.shape == (1, 1, 64, 64)  # one fine-tuning, not one per scale
    assert all(torch.equal(v, scenes_model.state_dict()[k]) for k, v in before.items())


def test_rib_needs_one_image_per_call():
    with pytest.raises(ConfigError, match="batch_size"):
        build_cam_method(CamConfig(method="rib", batch_size=4))
    with pytest.raises(ConfigError, match="prepare"):
        build_cam_method(CamConfig(method="rib", batch_size=1))(None, torch.zeros(1, 3, 8, 8), [0])  # type: ignore[arg-type]


def test_a_resumed_pass_writes_the_same_cams_and_notes_as_one_uninterrupted_pass(scenes_model, tiny_scenes, tmp_path):
    """A pass killed after 3 images and resumed by a new process (a fresh method) must write the files of one
    uninterrupted pass: the same disjoint draws per image (seeded by its name, not by what came before) and
    every image's steps and stop reason in its CAM file."""
    from scarce.cams.store import load_cam, load_cam_notes
    from scarce.data.base import open_dataset
    from scarce.pipeline import extract_cams

    train, val = open_dataset("scenes", tiny_scenes, "train"), open_dataset("scenes", tiny_scenes, "val")
    cfg = CamConfig(method="rib", batch_size=1, scales=(1.0,), options={
        "rib_iter": 3, "rib_batch": 2, "rib_lr": 0.5, "pool_images": 12, "explode_ratio": 1.0, "tune": "all"})

    def fresh():
        method = build_cam_method(cfg)
        method.prepare(scenes_model, train, tmp_path)
        return method

    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    extract_cams(scenes_model, val, cfg, whole, method=fresh(), progress=False)
    extract_cams(scenes_model, val.subset(val.samples[:3]), cfg, resumed, method=fresh(), progress=False)
    extract_cams(scenes_model, val, cfg, resumed, method=fresh(), progress=False)
    for sample in val.samples:
        a, b = whole / f"{sample.stem}.npz", resumed / f"{sample.stem}.npz"
        assert np.array_equal(load_cam(a)[0], load_cam(b)[0]), sample.stem
        notes = load_cam_notes(b)
        assert notes == load_cam_notes(a) and 1 <= notes["steps"] <= 3 and notes["stop_reason"] in ("iterations", "stop_th")
    # the draws matter: the same images without names (one generator through the calls) give other maps
    unnamed = fresh()
    image = torch.stack([to_tensor(val.load_image(s), scenes_model.mean_std) for s in val.samples[3:4]])
    extractor = CamExtractor(scenes_model, cfg, unnamed)
    extractor(torch.stack([to_tensor(val.load_image(val.samples[0]), scenes_model.mean_std)]), list(val.samples[0].labels))
    later = extractor(image, list(val.samples[3].labels))[0].numpy()
    assert not np.allclose(later, load_cam(whole / f"{val.samples[3].stem}.npz")[0], atol=1e-4)
