"""OC-CSE erasing: the mask removes exactly the thresholded region; C stays frozen; E gets the gradient."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from scarce.methods.erasing import ErasingObjective, erase, erasing_mask
from scarce.models import ModelConfig, build_classifier
from scarce.models.classifier import CamModel
from scarce.training.trainer import TrainConfig, _freeze_batchnorm, build_optimizer


def test_hard_erasing_removes_exactly_the_thresholded_region():
    torch.manual_seed(0)
    cams = torch.randn(2, 4, 4)
    images = torch.randn(2, 3, 16, 16)
    mask = erasing_mask(cams, (16, 16), norm="image", threshold=0.5)
    up = F.relu(F.interpolate(cams[:, None], size=(16, 16), mode="bilinear", align_corners=False))
    region = up / (up.amax(dim=(1, 2, 3), keepdim=True) + 1e-5) > 0.5
    erased = erase(images, mask)
    assert torch.equal(erased[region.expand_as(images)], torch.zeros(int(region.sum()) * 3))
    assert torch.equal(erased[~region.expand_as(images)], images[~region.expand_as(images)])
    assert region.any() and (~region).any()


def test_soft_mask_is_divided_by_the_batch_or_image_max():
    cams = torch.stack([torch.full((2, 2), 1.0), torch.full((2, 2), 4.0)])
    batch = erasing_mask(cams, (2, 2), norm="batch")
    image = erasing_mask(cams, (2, 2), norm="image")
    assert torch.allclose(batch[:, 0, 0, 0], torch.tensor([0.25, 1.0]), atol=1e-4)
    assert torch.allclose(image[:, 0, 0, 0], torch.tensor([1.0, 1.0]), atol=1e-4)
    images = torch.ones(2, 3, 2, 2)
    assert torch.allclose(erase(images, batch)[0], torch.full((3, 2, 2), 0.75), atol=1e-4)


class PixelLinear(CamModel):
    """Features are the 1-channel image itself (stride 1), logits = W · GAP(F): every map is hand-computable."""

    num_classes = 2

    def __init__(self, weights: list[float]) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.tensor(weights)[:, None])

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return images

    @property
    def class_weights(self) -> torch.Tensor:
        return self.weight

    def logits_from_features(self, features: torch.Tensor) -> torch.Tensor:
        return features.mean(dim=(2, 3)) @ self.weight.T


def soft_margin(logits: list[list[float]], labels: list[list[int]]) -> float:
    terms = [math.log1p(math.exp(-z if y else z)) for row, ys in zip(logits, labels) for z, y in zip(row, ys)]
    return sum(terms) / len(terms)


def test_objective_against_a_hand_computation():
    # two single-label images of class 0 (so r = 0): x and 2x with x = [[1, 2], [3, 4]]. E's class-0 map is the
    # image itself; OC-CSE divides by the batch max (8): masks x/8 and 2x/8.
    images = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]], [[[2.0, 4.0], [6.0, 8.0]]]])
    labels = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    eraser, ordinary = PixelLinear([1.0, 0.5]), PixelLinear([2.0, 1.0])
    objective = ErasingObjective(2, 1)
    objective.set_ordinary(ordinary)
    loss, parts = objective(eraser, images, labels, 0.5)
    # erased: [[.875, 1.5], [1.875, 2]] (GAP 1.5625) and [[1.5, 2], [1.5, 0]] (GAP 1.25); C's weights (2, 1);
    # nothing remains of the images' labels once class 0 is erased
    erased = soft_margin([[3.125, 1.5625], [2.5, 1.25]], [[0, 0], [0, 0]])
    cls = soft_margin([[2.5, 1.25], [5.0, 2.5]], [[1, 0], [1, 0]])  # E's logits on the whole images
    w = 0.3 + 0.05 * 15 * 0.5
    assert parts["w"] == pytest.approx(w) and parts["cls"] == pytest.approx(cls, rel=1e-6)
    assert parts["erased"] == pytest.approx(erased, rel=1e-4)
    assert float(loss.detach()) == pytest.approx(cls + w * erased, rel=1e-4)


def test_objective_trains_e_through_the_mask_and_keeps_c_frozen(tiny_model):
    ordinary = copy.deepcopy(tiny_model)
    before = {k: v.clone() for k, v in ordinary.state_dict().items()}
    objective = ErasingObjective(4, tiny_model.class_weights.shape[1], cc_init=1.0, cc_slope=0.0)
    objective.set_ordinary(ordinary)
    objective.train()
    assert not ordinary.training and not any(p.requires_grad for p in ordinary.parameters())
    assert list(objective.parameters()) == [] and objective.state_dict() == {}
    tiny_model.train()
    images, labels = torch.randn(2, 3, 64, 64), torch.tensor([[1.0, 0, 0, 1], [0, 1, 0, 0]])
    # the erased-classification term alone (the loss minus E's own BCE) reaches E's classifier through the mask
    loss, parts = objective(tiny_model, images, labels, 0.5)
    (loss - F.multilabel_soft_margin_loss(tiny_model(images), labels)).backward()
    assert tiny_model.classifier.weight.grad.abs().sum() > 0
    assert all(torch.equal(v, ordinary.state_dict()[k]) for k, v in before.items())


def test_optimizer_groups_are_oc_cses():
    """model_cse.train_setup: weights x1 / x10 with decay, biases x2 / x20 without (a backbone with SE biases)."""
    model = build_classifier(ModelConfig(backbone="test_efficientnet", pretrained=None), 4)
    _freeze_batchnorm(model)
    cfg = TrainConfig(lr=0.01, head_lr_mult=10.0, weight_decay=5e-4)
    groups = build_optimizer(model, ErasingObjective(4, model.class_weights.shape[1]), cfg).param_groups
    setting = {name: next((g["base_lr"], g["weight_decay"]) for g in groups if any(p is q for q in g["params"]))
               for name, p in model.named_parameters() if p.requires_grad}
    assert setting["classifier.weight"] == pytest.approx((0.1, 5e-4))
    assert setting["backbone.blocks.3.0.se.conv_reduce.bias"] == pytest.approx((0.02, 0.0))
    assert setting["backbone.blocks.3.0.se.conv_reduce.weight"] == pytest.approx((0.01, 5e-4))
    assert setting["backbone.conv_stem.weight"] == pytest.approx((0.01, 5e-4))
