"""AdvCAM: the climbed scores, a step raising the target's, maps summed over steps, the step's normalisation."""

from __future__ import annotations

import pytest
import torch

from scarce.cams import CamConfig, CamExtractor, build_cam_method
from scarce.errors import ConfigError
from scarce.methods.advcam import AdvCam, AdvcamOptions, adversarial_step, climb_objective


def _hand_scores(model, images: torch.Tensor, logits: str) -> torch.Tensor:
    """(N, C) scores, one class and one grid cell at a time."""
    with torch.no_grad():
        features = model.features(images)
        if logits == "classifier":
            return model(images)
        n, _, h, w = features.shape
        scores = torch.zeros(n, model.class_weights.shape[0])
        for i in range(n):
            for c, weight in enumerate(model.class_weights):
                cells = [max(float(weight @ features[i, :, y, x]), 0.0) for y in range(h) for x in range(w)]
                scores[i, c] = sum(cells) / len(cells)
        return scores


@pytest.mark.parametrize("logits", ["relu_cam", "classifier"])
def test_objective_is_the_target_score_minus_the_others(tiny_model, logits):
    torch.manual_seed(0)
    images = torch.randn(2, 3, 64, 64)
    target = torch.tensor([1, 3])
    with torch.no_grad():
        objective, cam = climb_objective(tiny_model, images, target, None, 7.0, 0.5, logits)
    scores = _hand_scores(tiny_model, images, logits)
    expected = torch.stack([2 * scores[i, c] - scores[i].sum() for i, c in enumerate(target.tolist())])
    assert torch.allclose(objective, expected, atol=1e-4)
    assert cam.shape == (2, 4, 4) and (cam >= 0).all()  # 64 px at stride 16


def test_the_two_scores_differ_where_maps_go_negative(tiny_model):
    torch.manual_seed(0)
    images = torch.randn(2, 3, 64, 64)
    relu_cam, classifier = _hand_scores(tiny_model, images, "relu_cam"), _hand_scores(tiny_model, images, "classifier")
    assert (tiny_model.class_maps(tiny_model.features(images)) < 0).any()
    assert not torch.allclose(relu_cam, classifier, atol=1e-3)


@pytest.mark.parametrize("logits", ["relu_cam", "classifier"])
def test_a_step_increases_the_target_score(tiny_model, logits):
    torch.manual_seed(0)
    images = torch.randn(3, 3, 64, 64)
    target = torch.tensor([1, 2, 0])
    rows = torch.arange(3)
    x = images.clone().requires_grad_(True)
    objective, _ = climb_objective(tiny_model, x, target, None, 7.0, 0.5, logits)
    (grad,) = torch.autograd.grad(objective.sum(), x)
    stepped = adversarial_step(images, grad, 0.01)
    before, after = _hand_scores(tiny_model, images, logits), _hand_scores(tiny_model, stepped, logits)
    assert (after[rows, target] > before[rows, target]).all()


def test_unknown_scores_are_refused():
    with pytest.raises(ConfigError, match="logits must be one of relu_cam, classifier"):
        build_cam_method(CamConfig(method="advcam", options={"logits": "softmax"}))


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
