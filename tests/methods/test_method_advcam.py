"""AdvCAM: a climbing step increases the target logit; maps are the sum over steps; the step's normalisation."""

from __future__ import annotations

import torch

from scarce.cams import CamConfig, CamExtractor, build_cam_method
from scarce.methods.advcam import AdvCam, AdvcamOptions, adversarial_step, climb_objective


def test_a_step_increases_the_target_logit(tiny_model):
    torch.manual_seed(0)
    images = torch.randn(3, 3, 64, 64)
    target = torch.tensor([1, 2, 0])
    rows = torch.arange(3)
    x = images.clone().requires_grad_(True)
    objective, _ = climb_objective(tiny_model, x, target, None, 7.0, 0.5)
    (grad,) = torch.autograd.grad(objective.sum(), x)
    stepped = adversarial_step(images, grad, 0.01)
    with torch.no_grad():
        before, after = tiny_model(images)[rows, target], tiny_model(stepped)[rows, target]
    assert (after > before).all()


def test_step_is_normalised_by_the_max_gradient_and_clipped_to_the_image_range():
    x = torch.tensor([[[[0.0, 1.0], [0.5, 0.2]]]]).expand(1, 3, 2, 2).clone()
    grad = torch.zeros_like(x)
    grad[0, 0, 0, 0], grad[0, 1, 1, 1], grad[0, 2, 0, 1] = 4.0, -2.0, 8.0
    out = adversarial_step(x, grad, 0.1)
    assert torch.isclose(out[0, 0, 0, 0], torch.tensor(0.05))  # 0 + 0.1 · 4/8
    assert torch.isclose(out[0, 1, 1, 1], torch.tensor(0.175))  # 0.2 − 0.1 · 2/8
    assert out[0, 2, 0, 1] == 1.0  # 1 + 0.1 clipped to the image's max


def test_maps_are_the_sum_of_cams_over_the_steps(tiny_model):
    images = torch.randn(2, 3, 64, 64)
    one = AdvCam(CamConfig(method="advcam"), AdvcamOptions(adv_iter=1))
    with torch.enable_grad():
        maps = one(tiny_model, images, [3, 1])
    with torch.no_grad():
        plain = torch.einsum("cd,bdhw->bchw", tiny_model.class_weights[[3, 1]], tiny_model.features(images)).clamp_min(0)
    assert torch.allclose(maps, plain, atol=1e-5)
    three = AdvCam(CamConfig(method="advcam"), AdvcamOptions(adv_iter=3))
    with torch.enable_grad():
        summed = three(tiny_model, images, [3, 1])
    assert summed.shape == plain.shape and (summed.sum(dim=(2, 3)) > plain.sum(dim=(2, 3))).all()
    assert not any(p.grad is not None for p in tiny_model.parameters())


def test_advcam_runs_in_the_multiscale_core(tiny_model):
    cfg = CamConfig(method="advcam", scales=(1.0, 0.5), batch_size=1, options={"adv_iter": 2, "base_size": 64})
    method = build_cam_method(cfg)
    assert method.steps_for(torch.zeros(1, 3, 32, 32)) == (1, 2.0) and method.steps_for(torch.zeros(1, 3, 64, 64)) == (2, 1.0)
    cams = CamExtractor(tiny_model, cfg, method)(torch.randn(1, 3, 64, 64), [0, 2])
    assert cams.shape == (1, 2, 64, 64) and torch.isfinite(cams).all() and float(cams.max()) <= 1.0
