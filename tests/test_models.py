"""Models and pretrained-weight resolution (offline first, clear errors, no network waits)."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from scarce.errors import ConfigError
from scarce.models import ModelConfig, ThresholdedAvgPool, build_classifier, build_imagenet_classifier, create_timm


def test_classifier_is_bias_free_and_logits_are_mean_of_cam():
    torch.manual_seed(0)
    model = build_classifier(ModelConfig(backbone="test_resnet", pretrained=None), 3).eval()
    assert model.classifier.bias is None
    assert not model.classifier.weight.any()  # zero start: the loss starts at log 2
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        model.classifier.weight.normal_()
        feats = model.features(x)
        assert feats.shape[-1] == 4  # output stride 16
        assert torch.allclose(model(x), model.class_maps(feats).mean(dim=(2, 3)), atol=1e-5)


def test_tap_pools_only_above_threshold():
    feats = torch.tensor([[[[0.0, 1.0], [2.0, 4.0]], [[0.0, 0.0], [0.0, 0.0]]]])
    # channel 0: max 4, tau 0.3 → keep > 1.2: {2, 4} → 3; channel 1 is all zero → 0.
    assert torch.allclose(ThresholdedAvgPool(0.3)(feats), torch.tensor([[3.0, 0.0]]))
    with pytest.raises(ValueError):
        ThresholdedAvgPool(1.5)


def test_offline_imagenet_weights_recognise_the_cat():
    from skimage import data
    import torch.nn.functional as F

    model = build_imagenet_classifier().eval()
    image = torch.from_numpy(data.chelsea().copy()).permute(2, 0, 1).float()[None] / 255
    image = F.interpolate(image, size=(224, 224), mode="bilinear", align_corners=False)
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in model.mean_std)
    with torch.no_grad():
        top5 = model((image - mean) / std).topk(5).indices[0].tolist()
    assert set(top5) & {281, 282, 283, 284, 285}  # ImageNet's domestic cat classes


def test_hub_weights_offline_fail_at_once(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(ConfigError, match="offline"):
        create_timm("resnet18", "hub")
    assert time.perf_counter() - start < 5


def test_auto_weights_only_for_shipped_models():
    with pytest.raises(ConfigError, match="no offline weights for 'resnet18'"):
        create_timm("resnet18", "auto")
    with pytest.raises(ConfigError, match="unknown timm model"):
        create_timm("no_such_net", None)


def test_checkpoint_path_weights(tmp_path):
    torch.manual_seed(1)
    source = create_timm("test_resnet", None)
    torch.save({"state_dict": source.state_dict()}, tmp_path / "w.pth")
    loaded = create_timm("test_resnet", str(tmp_path / "w.pth"))
    for key, value in source.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key])
    with pytest.raises(ConfigError, match="not found"):
        create_timm("test_resnet", str(tmp_path / "missing.pth"))
    (tmp_path / "bad.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(Exception, match="bad.pth"):
        create_timm("test_resnet", str(tmp_path / "bad.pth"))


def test_head_feature_layer_is_the_map_the_imagenet_head_pools():
    # the CAM layer of "head" is timm's forward_features of the same pretrained network (conv_head + BN + ReLU6)
    torch.manual_seed(0)
    model = build_classifier(ModelConfig(output_stride=None), 4).eval()
    reference = build_imagenet_classifier().eval()
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        feats = model.features(x)
        assert torch.allclose(feats, reference.model.forward_features(x), atol=1e-5)
    assert feats.shape[1] == 1280 and feats.min() >= 0  # non-negative, unlike the linear bottleneck below


def test_last_stage_feature_layer_and_unknown_layer():
    model = build_classifier(ModelConfig(pretrained=None, feature_layer="last_stage"), 4).eval()
    with torch.no_grad():
        feats = model.features(torch.randn(1, 3, 64, 64))
    assert feats.shape[1:] == (320, 4, 4) and feats.min() < 0  # EfficientNet's last stage is a linear bottleneck
    with pytest.raises(ConfigError, match="feature_layer"):
        build_classifier(ModelConfig(pretrained=None, feature_layer="stem"), 4)


@pytest.mark.parametrize("backbone, layer, expected", [
    ("test_efficientnet", "head", "backbone.bn2"),  # conv_head → bn2 (BN + activation); pool and head pass through
    ("test_resnet", "head", "backbone.layer4"),
    ("test_efficientnet", "last_stage", None),  # None: timm's own feature_info names it
])
def test_feature_module_name_outputs_the_cam_features(backbone, layer, expected):
    from scarce.models.classifier import feature_module_name

    model = build_classifier(ModelConfig(backbone=backbone, pretrained=None, feature_layer=layer), 3).eval()
    name = feature_module_name(model)
    assert name == (expected or "backbone." + model.backbone.feature_info.module_name()[-1])
    captured = []
    dict(model.named_modules())[name].register_forward_hook(lambda m, i, o: captured.append(o))
    with torch.no_grad():
        features = model.features(torch.randn(1, 3, 64, 64))
    assert torch.equal(captured[-1], features)
