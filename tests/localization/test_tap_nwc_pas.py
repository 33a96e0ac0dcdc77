"""TAP, NWC and PaS formulas on tiny tensors, and NWC composed with Grad-CAM and timm heads."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from scarce.cams import CamConfig, CamExtractor, normalize_cams
from scarce.localization.boxes import boxes_from_cam
from scarce.models.nwc import NegativeWeightClamped, with_nwc
from scarce.models import ThresholdedAvgPool
from scarce.models.classifier import CamClassifier, TimmHeadClassifier


class PassThrough(nn.Module):
    """A 'backbone' whose feature map is the input (times a parameter equal to 1, so that gradients flow)."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [x * self.scale]


def tiny_model(weights: list[list[float]], pooling: nn.Module | None = None) -> CamClassifier:
    channels = len(weights[0])
    model = CamClassifier(PassThrough(), channels, len(weights), pooling or nn.Identity(),
                          ((0.0,) * 3, (1.0,) * 3))
    if pooling is None:
        from scarce.models import GlobalAvgPool

        model.pool = GlobalAvgPool()
    with torch.no_grad():
        model.classifier.weight.copy_(torch.tensor(weights)[:, :, None, None])
    return model.eval()


def test_tap_formula():
    # channel 0: max 1.0, τ·max = 0.05 → keeps 1.0 and 0.5 (0.04 and 0 are out) → 0.75
    # channel 1: all zero → 0 (no division by zero)
    features = torch.tensor([[[[1.0, 0.04], [0.5, 0.0]], [[0.0, 0.0], [0.0, 0.0]]]])
    pooled = ThresholdedAvgPool(0.05)(features)
    assert pooled.tolist() == [[0.75, 0.0]]
    # GAP would give 0.385: TAP does not let the zeros of a small active area drown the channel
    assert features.mean(dim=(2, 3))[0, 0].item() == pytest.approx(0.385)


def test_nwc_formula_by_flag_and_by_wrapper():
    model = tiny_model([[2.0, -1.0, 0.5]])
    images = torch.tensor([[[[1.0, 0.0]], [[3.0, 1.0]], [[2.0, 2.0]]]])  # (1, 3 channels, 1, 2)
    plain = CamConfig(scales=(1.0,), flip=False, normalize="none")
    clamped = CamConfig(scales=(1.0,), flip=False, normalize="none", clamp_negative_weights=True)
    with torch.no_grad():
        cam = CamExtractor(model, plain)(images)
        nwc_flag = CamExtractor(model, clamped)(images)
        nwc_wrapped = CamExtractor(NegativeWeightClamped(model), plain)(images)
    # CAM = relu(2·F0 − F1 + 0.5·F2) = relu([2 − 3 + 1, 0 − 1 + 1]) = [0, 0]
    assert cam.flatten().tolist() == [0.0, 0.0]
    # NWC = 2·F0 + 0.5·F2 = [3, 1]
    assert nwc_flag.flatten().tolist() == [3.0, 1.0]
    assert nwc_wrapped.flatten().tolist() == [3.0, 1.0]


def test_nwc_composes_with_gradcam():
    torch.manual_seed(0)
    model = tiny_model([[1.0, -2.0, 0.5], [-1.0, 0.3, 2.0]])
    images = torch.rand(2, 3, 4, 5)
    cfg = CamConfig(method="gradcam", scales=(1.0,), flip=False, normalize="none")
    cam_cfg = CamConfig(scales=(1.0,), flip=False, normalize="none", clamp_negative_weights=True)
    grad = CamExtractor(NegativeWeightClamped(model), cfg)(images)
    with torch.no_grad():
        nwc_cam = CamExtractor(model, cam_cfg)(images)
    # with GAP, d logit / d F = w / (h·w): Grad-CAM of the clamped head = NWC-CAM / 20
    assert torch.allclose(grad, nwc_cam / 20, atol=1e-6)
    # and without the wrapper Grad-CAM differs (it sees negative weights)
    plain = CamExtractor(model, cfg)(images)
    assert not torch.allclose(plain, grad)


def test_nwc_wrapper_on_a_timm_head_keeps_bias_and_layer_names():
    import timm

    torch.manual_seed(0)
    net = timm.create_model("test_efficientnet", pretrained=False, num_classes=4)
    model = TimmHeadClassifier(net).eval()
    wrapped = with_nwc(model, True)
    assert with_nwc(model, False) is model and with_nwc(wrapped, True) is wrapped
    images = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        features = model.features(images)
        pooled = net.forward_head(features, pre_logits=True)
        expected = pooled @ net.get_classifier().weight.clamp_min(0).T + net.get_classifier().bias
        assert torch.allclose(wrapped(images), expected, atol=1e-5)
    assert dict(wrapped.named_modules()).keys() == dict(model.named_modules()).keys()


def test_pas_normalisation_and_threshold():
    cam = torch.arange(1.0, 101.0).view(1, 1, 10, 10)  # values 1..100
    # torch.quantile interpolates linearly: P98 of 1..100 = 98.02
    out = normalize_cams(cam, "percentile", 98.0, eps=0.0)
    assert out[0, 0, 0, 0].item() == pytest.approx(1 / 98.02)
    assert out[0, 0, 9, 7].item() == pytest.approx(98 / 98.02)
    assert out[0, 0, 9, 8:].tolist() == [1.0, 1.0]  # 99 and 100 are clipped
    # PaS threshold 0.5 → pixels above 0.5 · P98 of the raw map: the last 51 values (50..100)
    (box,) = boxes_from_cam(cam[0, 0].numpy().astype(float), 0.5, standard="percentile", percentile=98.0)
    assert box.pixels == 51
    # MaS at 0.5 keeps values > 50: the same map, 50 pixels
    (box,) = boxes_from_cam(cam[0, 0].numpy().astype(float), 0.5)
    assert box.pixels == 50
