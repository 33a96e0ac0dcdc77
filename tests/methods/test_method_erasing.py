"""OC-CSE erasing: the mask removes exactly the thresholded region; C stays frozen; E gets the gradient."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from scarce.methods.erasing import ErasingObjective, erase, erasing_mask


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


def test_objective_trains_e_through_the_mask_and_keeps_c_frozen(tiny_model):
    ordinary = copy.deepcopy(tiny_model)
    before = {k: v.clone() for k, v in ordinary.state_dict().items()}
    objective = ErasingObjective(4, tiny_model.class_weights.shape[1])
    objective.set_ordinary(ordinary)
    objective.train()
    assert not ordinary.training and not any(p.requires_grad for p in ordinary.parameters())
    assert list(objective.parameters()) == [] and objective.state_dict() == {}
    tiny_model.train()
    images, labels = torch.randn(2, 3, 64, 64), torch.tensor([[1.0, 0, 0, 1], [0, 1, 0, 0]])
    torch.manual_seed(0)
    loss, parts = objective(tiny_model, images, labels, 0.5)
    assert abs(parts["w"] - (0.3 + 0.05 * 15 * 0.5)) < 1e-9
    assert torch.isclose(loss, torch.tensor(parts["cls"] + parts["w"] * parts["erased"]), atol=1e-5)
    # the erased-classification term alone reaches E's classifier only through the mask
    tiny_model.zero_grad()
    torch.manual_seed(0)
    _, _ = objective(tiny_model, images, labels, 0.5)
    objective.cc_init, objective.cc_slope = 1.0, 0.0
    torch.manual_seed(0)
    features = tiny_model.features(images)
    target = torch.multinomial(labels, 1)[:, 0]
    cams = torch.einsum("bd,bdhw->bhw", tiny_model.class_weights[target], features)
    remain = labels.clone()
    remain[torch.arange(2), target] = 0
    sel = F.multilabel_soft_margin_loss(ordinary(erase(images, erasing_mask(cams, (64, 64)))), remain)
    sel.backward()
    assert tiny_model.classifier.weight.grad.abs().sum() > 0
    assert all(torch.equal(v, ordinary.state_dict()[k]) for k, v in before.items())
