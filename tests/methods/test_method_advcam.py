"""AdvCAM against its code: the climbed scores, the Grad-CAM map and its scale, the regulariser, the joint
step of an image and its flip, equal scale weights, and maps summed over the steps."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from scarce.cams import CamConfig, CamExtractor, build_cam_method
from scarce.errors import ConfigError
from scarce.methods.advcam import AdvCam, AdvcamOptions, adversarial_step, climb_objective, small_scale_steps


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


def _official_gradcam(model, pair: torch.Tensor, c: int) -> torch.Tensor:
    """AdvCAM's gradCAM.py on the CAM layer, written with hooks' semantics: (2, 3, H, W) pair → (h, w) flip-summed map.

    backward of gsp2d(relu(CAM))[:, c].sum(); weights = gap2d_pos(grads) = per-channel gradient sums divided by
    the count of positive entries in the whole gradient tensor; map = relu(Σ_d weights · F), then x[0] + flip(x[1]).
    """
    features = model.features(pair).detach().requires_grad_(True)
    total = F.relu(model.class_maps(features))[:, c].sum()
    (grads,) = torch.autograd.grad(total, features)
    weights = grads.sum(dim=(2, 3)) / ((grads > 0).sum() + 1e-12)
    maps = F.relu((features * weights[:, :, None, None]).sum(dim=1)).detach()
    return maps[0] + maps[1].flip(-1)


@pytest.mark.parametrize("logits", ["relu_cam", "classifier"])
def test_objective_sums_target_minus_others_over_the_pair(tiny_model, logits):
    torch.manual_seed(0)
    images = torch.randn(2, 2, 3, 64, 64)  # (views, pairs, ...)
    target = torch.tensor([1, 3])
    with torch.no_grad():
        objective, regions = climb_objective(tiny_model, images, target, None, 7.0, 0.5, logits)
    expected = []
    for g, c in enumerate(target.tolist()):
        scores = _hand_scores(tiny_model, images[:, g], logits)
        expected.append(sum(2 * scores[v, c] - scores[v].sum() for v in range(2)))
    assert torch.allclose(objective, torch.stack(expected), atol=1e-4)
    assert regions.shape == (2, 2, 4, 4) and (regions >= 0).all()  # 64 px at stride 16


def test_the_two_scores_differ_where_maps_go_negative(tiny_model):
    torch.manual_seed(0)
    images = torch.randn(2, 3, 64, 64)
    relu_cam, classifier = _hand_scores(tiny_model, images, "relu_cam"), _hand_scores(tiny_model, images, "classifier")
    assert (tiny_model.class_maps(tiny_model.features(images)) < 0).any()
    assert not torch.allclose(relu_cam, classifier, atol=1e-3)


def test_map_is_advcams_gradcam_with_its_scale(tiny_model):
    """The flip-summed map equals AdvCAM's hook-based Grad-CAM, far below the plain ReLU'd CAM."""
    torch.manual_seed(1)
    image = torch.randn(1, 3, 64, 64)
    pair = torch.cat([image, image.flip(-1)])
    with torch.no_grad():
        _, regions = climb_objective(tiny_model, pair[:, None], torch.tensor([2]), None, 7.0, 0.5)
    reference = _official_gradcam(tiny_model, pair, 2)
    assert torch.allclose(regions[0, 0] + regions[1, 0].flip(-1), reference, atol=1e-6)
    plain = F.relu(tiny_model.class_maps(tiny_model.features(pair)))[:, 2].detach()
    assert float(reference.max()) < 0.1 * float((plain[0] + plain[1].flip(-1)).max())


def test_regulariser_penalises_change_inside_the_discriminative_region(tiny_model):
    torch.manual_seed(2)
    image = torch.randn(1, 3, 64, 64)
    pair = torch.cat([image, image.flip(-1)])[:, None]
    reference = _official_gradcam(tiny_model, pair[:, 0], 0)
    init = torch.zeros(1, *reference.shape)
    with torch.no_grad():
        plain, _ = climb_objective(tiny_model, pair, torch.tensor([0]), init, 0.0, 0.5)
        penalised, _ = climb_objective(tiny_model, pair, torch.tensor([0]), init, 7.0, 0.5)
    mask = reference / reference.max() > 0.5  # AdvCAM's add_discriminative
    assert 0 < int(mask.sum()) < mask.numel()
    assert float(penalised) == pytest.approx(float(plain) - 7.0 * float(reference[mask].sum()), rel=1e-5)
    # the regulariser steers the climb: with λ the first step differs from the step without it
    x = pair.clone().requires_grad_(True)
    (free,) = torch.autograd.grad(climb_objective(tiny_model, x, torch.tensor([0]), init, 0.0, 0.5)[0].sum(), x)
    (held,) = torch.autograd.grad(climb_objective(tiny_model, x, torch.tensor([0]), init, 7.0, 0.5)[0].sum(), x)
    assert not torch.allclose(free, held)


@pytest.mark.parametrize("logits", ["relu_cam", "classifier"])
def test_a_step_increases_the_target_score(tiny_model, logits):
    torch.manual_seed(0)
    images = torch.randn(1, 3, 3, 64, 64)
    target = torch.tensor([1, 2, 0])
    x = images.clone().requires_grad_(True)
    objective, _ = climb_objective(tiny_model, x, target, None, 7.0, 0.5, logits)
    (grad,) = torch.autograd.grad(objective.sum(), x)
    stepped = adversarial_step(images, grad, 0.01)
    before, after = _hand_scores(tiny_model, images[0], logits), _hand_scores(tiny_model, stepped[0], logits)
    rows = torch.arange(3)
    assert (after[rows, target] > before[rows, target]).all()


def test_unknown_scores_are_refused():
    with pytest.raises(ConfigError, match="logits must be one of relu_cam, classifier"):
        build_cam_method(CamConfig(method="advcam", options={"logits": "softmax"}))


def test_step_is_normalised_and_clipped_over_the_pair():
    # view 0 of the pair ranges over [0, 1], view 1 over [−1, 0.5]: the pair's range is [−1, 1]
    x = torch.zeros(2, 1, 1, 2, 2)
    x[0, 0, 0] = torch.tensor([[0.0, 1.0], [0.5, 0.2]])
    x[1, 0, 0] = torch.tensor([[-1.0, 0.5], [0.0, 0.0]])
    grad = torch.zeros_like(x)
    grad[0, 0, 0, 0, 0], grad[0, 0, 0, 0, 1], grad[1, 0, 0, 1, 1] = 4.0, 2.0, 8.0  # the max |g| is in view 1
    out = adversarial_step(x, grad, 0.1)
    assert torch.isclose(out[0, 0, 0, 0, 0], torch.tensor(0.05))  # 0 + 0.1 · 4/8
    assert out[0, 0, 0, 0, 1] == 1.0  # 1 + 0.025, clipped to the pair's max
    assert torch.isclose(out[1, 0, 0, 1, 1], torch.tensor(0.1))  # 0 + 0.1 · 8/8: view 1's own max (0.5) does not clip


def test_scales_weigh_the_same_and_the_smallest_takes_fewer_steps():
    assert [small_scale_steps(n) for n in (27, 11, 10, 8, 6, 5, 2)] == [13, 5, 5, 5, 5, 5, 2]
    method = build_cam_method(CamConfig(method="advcam", options={"adv_iter": 8, "base_size": 64}))
    assert method.steps_for(torch.zeros(2, 3, 32, 32)) == 5 and method.steps_for(torch.zeros(2, 3, 64, 64)) == 8


def test_maps_are_the_sum_of_gradcam_maps_over_the_steps(tiny_model):
    torch.manual_seed(4)
    images = torch.randn(1, 3, 64, 64)
    cfg = CamConfig(method="advcam", scales=(1.0,), normalize="none")
    one = AdvCam(cfg, AdvcamOptions(adv_iter=1))
    maps = CamExtractor(tiny_model, cfg, one)(images, [3, 1])  # the core flip-sums the per-view maps
    pair = torch.cat([images, images.flip(-1)])
    for j, c in enumerate([3, 1]):
        expected = F.interpolate(_official_gradcam(tiny_model, pair, c)[None, None], size=(64, 64), mode="bilinear",
                                 align_corners=False)[0, 0]
        assert torch.allclose(maps[0, j], expected, atol=1e-6)
    three = CamExtractor(tiny_model, cfg, AdvCam(cfg, AdvcamOptions(adv_iter=3)))(images, [3, 1])
    assert (three.sum(dim=(2, 3)) > maps.sum(dim=(2, 3))).all()
    assert not any(p.grad is not None for p in tiny_model.parameters())


def test_advcam_runs_in_the_multiscale_core(tiny_model):
    cfg = CamConfig(method="advcam", scales=(1.0, 0.5), batch_size=1, options={"adv_iter": 2, "base_size": 64})
    cams = CamExtractor(tiny_model, cfg)(torch.randn(1, 3, 64, 64), [0, 2])
    assert cams.shape == (1, 2, 64, 64) and torch.isfinite(cams).all() and float(cams.max()) <= 1.0
