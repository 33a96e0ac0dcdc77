"""ReCAM: pooled class features, the SCE term, the objective's gradients and the product-of-weights map."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from scarce.cams import CamConfig, CamExtractor, build_cam_method
from scarce.errors import ConfigError
from scarce.methods.recam import ReCam, ReCamObjective, class_features, normalized_cams, positive_softmax_ce
from scarce.training.losses import MultiLabelObjective, build_objective
from scarce.training.trainer import TrainConfig, _freeze_batchnorm, build_optimizer


def test_pooled_class_features_equal_the_explicit_sum():
    torch.manual_seed(1)
    cams, features = torch.rand(2, 3, 4, 5), torch.randn(2, 6, 4, 5)
    pooled = class_features(cams, features)
    assert pooled.shape == (2, 3, 6)  # B x C x D: never a B x C x D x H x W product
    for b in range(2):
        for c in range(3):
            for d in range(6):
                explicit = sum(cams[b, c, y, x] * features[b, d, y, x] for y in range(4) for x in range(5)) / 20
                assert torch.isclose(pooled[b, c, d], explicit, atol=1e-6)


def test_normalized_cams_are_relu_over_max(tiny_model):
    features = tiny_model.features(torch.randn(2, 3, 64, 64))
    raw = torch.einsum("cd,bdhw->bchw", tiny_model.class_weights, features)
    expected = raw.clamp_min(0) / (raw.clamp_min(0).amax(dim=(2, 3), keepdim=True) + 1e-5)
    assert torch.allclose(normalized_cams(tiny_model, features), expected, atol=1e-6)


def test_softmax_ce_averages_per_image_then_divides_by_the_batch_size():
    logits = torch.randn(3, 3, 3)
    labels = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    image0 = (F.cross_entropy(logits[0, 0:1], torch.tensor([0])) + F.cross_entropy(logits[0, 2:3], torch.tensor([2]))) / 2
    image1 = F.cross_entropy(logits[1, 1:2], torch.tensor([1]))
    # ReCAM's Class_Predictor: loss / batch_size, the label-free third image counting in the batch
    assert torch.isclose(positive_softmax_ce(logits, labels), (image0 + image1) / 3)


def test_optimizer_groups_are_recams(tiny_model):
    """train_recam.py: backbone and W_cls at 0.1 x recam_learning_rate, only the new head at the full rate."""
    _freeze_batchnorm(tiny_model)
    cfg = TrainConfig(lr=5e-5, head_lr_mult=10.0)
    recam = ReCamObjective(4, tiny_model.class_weights.shape[1])
    rates = {id(p): group["base_lr"] for group in build_optimizer(tiny_model, recam, cfg).param_groups
             for p in group["params"]}
    trainable = [p for p in tiny_model.backbone.parameters() if p.requires_grad]
    assert trainable and all(rates[id(p)] == 5e-5 for p in trainable)
    assert rates[id(tiny_model.classifier.weight)] == 5e-5  # W_cls with the backbone, not with the head
    assert rates[id(recam.head.weight)] == pytest.approx(5e-4)
    assert len(rates) == len(trainable) + 2  # every trainable parameter once, frozen BatchNorm left out
    # the CAM objective keeps IRN's grouping: its classifier at 10x
    cam_rates = {id(p): group["base_lr"] for group in build_optimizer(tiny_model, MultiLabelObjective(), cfg).param_groups
                 for p in group["params"]}
    assert cam_rates[id(tiny_model.classifier.weight)] == pytest.approx(5e-4)


def test_objective_trains_the_head_and_the_backbone(tiny_model):
    objective = build_objective("recam", 4, tiny_model.class_weights.shape[1], {"loss_weight": 0.5})
    assert isinstance(objective, ReCamObjective) and objective.head.bias is None
    tiny_model.train()
    images, labels = torch.randn(3, 3, 64, 64), torch.tensor([[1.0, 0, 0, 1], [0, 1, 0, 0], [0, 0, 1, 1]])
    loss, parts = objective(tiny_model, images, labels, 0.0)
    bce = F.multilabel_soft_margin_loss(tiny_model(images), labels)
    assert torch.isclose(loss, bce + 0.5 * torch.tensor(parts["recam"]), atol=1e-5)
    loss.backward()
    assert objective.head.weight.grad is not None and objective.head.weight.grad.abs().sum() > 0
    assert tiny_model.classifier.weight.grad.abs().sum() > 0


def test_recam_map_uses_the_product_of_both_classifiers(tiny_model):
    objective = ReCamObjective(4, tiny_model.class_weights.shape[1])
    assert not objective.head.weight.any()  # zero start, like the spine's CAM head
    torch.nn.init.normal_(objective.head.weight)
    method = build_cam_method(CamConfig(method="recam"))
    method.bind(objective)
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        maps = method(tiny_model, images, [2, 0])
        weights = objective.head.weight * tiny_model.class_weights
        expected = torch.einsum("cd,bdhw->bchw", weights[[2, 0]], tiny_model.features(images))
    assert torch.allclose(maps, expected, atol=1e-6)
    cams = CamExtractor(tiny_model, CamConfig(method="recam", scales=(1.0,)), method)(images, [1])
    assert cams.shape == (2, 1, 64, 64) and float(cams.max()) <= 1.0


def test_recam_needs_its_head():
    with pytest.raises(ConfigError, match="objective 'recam'"):
        ReCam(CamConfig(method="recam")).bind(MultiLabelObjective())
    with pytest.raises(ConfigError, match="no re-activation head"):
        ReCam(CamConfig(method="recam"))(None, torch.zeros(1, 3, 8, 8))  # type: ignore[arg-type]
