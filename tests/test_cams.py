"""The CAM core against hand computations and a peer library (torchcam) on the same model."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from scarce.cams import CamConfig, CamExtractor, build_cam_method, multiscale_cams, normalize_cams
from scarce.errors import ConfigError
from scarce.models import ModelConfig, build_classifier
from scarce.models.classifier import feature_module_name
from scarce.models.nwc import NegativeWeightClamped


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    net = build_classifier(ModelConfig(backbone="test_efficientnet", pretrained=None), num_classes=5).eval()
    with torch.no_grad():  # a random head has mixed-sign weights, so ReLU and NWC both matter
        net.classifier.weight.normal_()
    return net


def hand_cam(model, images, scales, flip):
    """IRN's make_cam written out: per scale and flip, W·F, ReLU, un-flip, resize, sum."""
    size = images.shape[-2:]
    weight = model.classifier.weight[:, :, 0, 0]
    total = torch.zeros(len(images), weight.shape[0], *size)
    for s in scales:
        x = F.interpolate(images, size=(round(size[0] * s), round(size[1] * s)), mode="bilinear", align_corners=False)
        variants = [(x, False), (x.flip(-1), True)] if flip else [(x, False)]
        for xi, flipped in variants:
            feats = model.backbone.forward_features(xi)  # timm: the map its own head pools
            maps = torch.relu(torch.stack([(weight[c][:, None, None] * feats).sum(1) for c in range(weight.shape[0])], 1))
            if flipped:
                maps = maps.flip(-1)
            total += F.interpolate(maps, size=size, mode="bilinear", align_corners=False)
    return total


def test_multiscale_flip_cam_equals_hand_computation(model):
    images = torch.randn(2, 3, 64, 48)
    cfg = CamConfig(scales=(1.0, 0.5, 1.5), flip=True, normalize="none")
    with torch.no_grad():
        ours = CamExtractor(model, cfg)(images)
        expected = hand_cam(model, images, cfg.scales, True)
    assert ours.shape == (2, 5, 64, 48)
    assert torch.allclose(ours, expected, atol=1e-5, rtol=1e-5)


def test_class_subset_selects_rows(model):
    images = torch.randn(1, 3, 64, 64)
    extractor = CamExtractor(model, CamConfig(scales=(1.0,), flip=False))
    with torch.no_grad():
        everything = extractor(images)
        some = extractor(images, [3, 1])
    assert torch.allclose(some, everything[:, [3, 1]], atol=1e-6)


def test_cam_equals_torchcam(model):
    torchcam = pytest.importorskip("torchcam.methods")
    image = torch.randn(1, 3, 64, 64)
    layer = feature_module_name(model)
    with torchcam.CAM(model, target_layer=layer, fc_layer="classifier", input_shape=(3, 64, 64)) as extractor:
        logits = model(image)
        theirs = torch.stack([extractor(c, logits, normalized=False)[0][0] for c in range(5)])
    with torch.no_grad():
        ours = CamExtractor(model, CamConfig(scales=(1.0,), flip=False, normalize="none"))(image)
    # torchcam (normalized=False) returns the raw map at feature resolution; ours is its ReLU.
    feats = model.features(image)
    ours_low = torch.relu(model.class_maps(feats))[0]
    assert (theirs < 0).any()  # so the ReLU comparison is not vacuous
    theirs = torch.relu(theirs)
    assert (ours_low - theirs).abs().max() <= 1e-5
    # ... and ours at input size is exactly the bilinear upsampling of it.
    up = F.interpolate(ours_low[None], size=(64, 64), mode="bilinear", align_corners=False)[0]
    assert (ours[0] - up).abs().max() <= 1e-5
    # After the same (max) normalisation they still agree.
    assert (normalize_cams(ours_low) - normalize_cams(theirs)).abs().max() <= 1e-5


def test_gradcam_on_gap_head_equals_cam_over_area(model):
    image = torch.randn(2, 3, 64, 64)
    cfg = CamConfig(scales=(1.0,), flip=False, normalize="none")
    with torch.no_grad():
        cam = CamExtractor(model, cfg)(image)
    grad = CamExtractor(model, CamConfig(method="gradcam", scales=(1.0,), flip=False, normalize="none"))(image)
    h, w = model.features(image).shape[-2:]
    assert torch.allclose(grad, cam / (h * w), atol=1e-6)


def test_batched_gradcam_equals_one_backward_per_class(model):
    layer = feature_module_name(model)
    cfg = CamConfig(method="gradcam", layer=layer, scales=(1.0,), flip=False, normalize="none")
    images = torch.randn(2, 3, 64, 64)
    batched = build_cam_method(cfg)(model, images, [0, 2, 4]).detach()
    acts = []
    handle = dict(model.named_modules())[layer].register_forward_hook(lambda m, i, o: acts.append(o))
    for k, c in enumerate([0, 2, 4]):
        acts.clear()
        logits = model(images)
        (grad,) = torch.autograd.grad(logits[:, c].sum(), acts[0])
        weights = grad.mean(dim=(2, 3))
        expected = (weights[:, :, None, None] * acts[0]).sum(1)
        assert torch.allclose(batched[:, k], expected, atol=1e-5)
    handle.remove()


def test_negative_weight_clamping(model):
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        feats = model.features(images)
        clamped = build_cam_method(CamConfig(clamp_negative_weights=True))(model, images)
        expected = torch.einsum("cd,bdhw->bchw", model.class_weights.clamp_min(0), feats)
    assert torch.allclose(clamped, expected, atol=1e-6)
    assert (model.class_weights < 0).any()  # the check is not vacuous


def test_normalisations_on_a_known_map():
    cam = torch.tensor([[[0.0, 1.0], [2.0, 4.0]]])
    assert torch.allclose(normalize_cams(cam, "max"), cam / (4.0 + 1e-5))
    assert torch.allclose(normalize_cams(cam + 1.0, "minmax"), cam / (4.0 + 1e-5))
    # 50th percentile of [0, 1, 2, 4] is 1.5 (linear interpolation); values above it clip to 1.
    pas = normalize_cams(cam, "percentile", percentile=50.0)
    assert torch.allclose(pas, torch.tensor([[[0.0, 1.0 / 1.5], [1.0, 1.0]]]), atol=1e-4)
    assert torch.equal(normalize_cams(cam, "none"), cam)


def test_unknown_method_or_normalisation_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown CAM method 'nope'"):
        build_cam_method(CamConfig(method="nope"))
    with pytest.raises(ConfigError, match="normalisation"):
        build_cam_method(CamConfig(normalize="softmax"))


def test_multiscale_sums_scales(model):
    images = torch.randn(1, 3, 32, 32)
    method = build_cam_method(CamConfig())
    with torch.no_grad():
        one = multiscale_cams(model, images, method, (1.0,), flip=False)
        two = multiscale_cams(model, images, method, (1.0, 1.0), flip=False)
    assert torch.allclose(two, 2 * one)


def test_nwc_flag_reaches_gradcam_through_the_extractor(model):
    images = torch.randn(2, 3, 32, 32)
    flagged = CamConfig(method="gradcam", scales=(1.0,), flip=False, normalize="none", clamp_negative_weights=True)
    plain = replace(flagged, clamp_negative_weights=False)
    by_flag = CamExtractor(model, flagged)(images)
    by_wrapper = CamExtractor(NegativeWeightClamped(model), plain)(images)
    assert torch.allclose(by_flag, by_wrapper, atol=1e-6)
    assert not torch.allclose(by_flag, CamExtractor(model, plain)(images))


def test_cam_files_keep_their_notes_and_a_damaged_one_names_itself(tmp_path):
    import numpy as np

    from scarce.cams.store import load_cam, load_cam_notes, save_cam
    from scarce.errors import DataError

    path = tmp_path / "scene_1.npz"
    save_cam(path, np.ones((1, 4, 4), np.float32), [3], {"steps": 2, "stop_reason": "explode"})
    maps, keys = load_cam(path)
    assert maps.shape == (1, 4, 4) and keys.tolist() == [3]
    assert load_cam_notes(path) == {"steps": 2, "stop_reason": "explode"}
    save_cam(tmp_path / "plain.npz", np.ones((0, 4, 4), np.float32), [])
    assert load_cam_notes(tmp_path / "plain.npz") == {}
    path.write_bytes(path.read_bytes()[:40])  # truncated: not a zip any more
    for read in (load_cam, load_cam_notes):
        with pytest.raises(DataError, match=r"scene_1\.npz: not a scarce CAM file"):
            read(path)
