import json
import math

import numpy as np
import torch

from scarce.cil import Memory, MemorySpec, run
from scarce.cil.methods.mnemonics import unrolled_outer_loss
from scarce.cil.models import ConvNet, CosineHead
from scarce.cil.trainer import load_data

from cil_helpers import tiny_config

# A hand-made 2-class problem in the plane: a linear classifier without bias starts at W = 0 and takes one
# inner SGD step (lr 1) on two exemplars; the outer loss is its cross-entropy on two query points.
EXEMPLARS = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
EXEMPLAR_LABELS = torch.tensor([0, 1])
QUERY = torch.tensor([[1.0, -1.0], [-1.0, 1.0]])
QUERY_LABELS = torch.tensor([0, 1])


def toy_outer_loss(exemplars: torch.Tensor) -> torch.Tensor:
    head = torch.nn.Linear(2, 2, bias=False)
    start = {"weight": torch.zeros(2, 2)}
    return unrolled_outer_loss(head, start, exemplars, EXEMPLAR_LABELS, QUERY, QUERY_LABELS, steps=1, lr=1.0)


def test_toy_outer_loss_matches_the_hand_calculation():
    # W=0: softmax 1/2 each, so W1 = lr * mean_i (onehot(y_i) - 1/2) x_i^T = [[1/4, -1/4], [-1/4, 1/4]];
    # each query gets logits (1/2, -1/2) in favour of its class: CE = log(1 + e^-1).
    assert math.isclose(toy_outer_loss(EXEMPLARS).item(), math.log(1 + math.exp(-1)), rel_tol=1e-6)


def test_outer_gradient_reaches_the_exemplars_and_equals_finite_differences():
    x = EXEMPLARS.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(toy_outer_loss(x), [x])
    assert grad.abs().sum() > 0
    eps = 1e-3
    numeric = torch.zeros(2, 2)
    for i in range(2):
        for j in range(2):
            plus, minus = EXEMPLARS.clone(), EXEMPLARS.clone()
            plus[i, j] += eps
            minus[i, j] -= eps
            numeric[i, j] = (toy_outer_loss(plus).item() - toy_outer_loss(minus).item()) / (2 * eps)
    assert torch.allclose(grad, numeric, atol=1e-4)


def test_one_outer_step_lowers_the_outer_loss():
    x = EXEMPLARS.clone().requires_grad_(True)
    before = toy_outer_loss(x)
    (grad,) = torch.autograd.grad(before, [x])
    after = toy_outer_loss((x - 0.5 * grad).detach())  # the inner step needs autograd: no torch.no_grad here
    assert after.item() < before.item() - 1e-3


def test_gradient_reaches_image_pixels_through_a_backbone_and_only_via_the_inner_steps():
    torch.manual_seed(0)
    backbone, head = ConvNet(1, widths=(4, 8), last_relu=False).eval(), CosineHead(8)
    head.expand(3)
    images = torch.randn(6, 1, 8, 8).requires_grad_(True)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    with torch.no_grad():
        query = backbone(torch.randn(5, 1, 8, 8))[0]
    query_labels = torch.tensor([0, 1, 2, 0, 1])
    start = dict(head.named_parameters())
    for steps, reaches in ((3, True), (0, False)):
        loss = unrolled_outer_loss(head, start, backbone(images)[0], labels, query, query_labels, steps, 0.1)
        (grad,) = torch.autograd.grad(loss, [images], allow_unused=True)
        assert (grad is not None and bool((grad.abs().sum(dim=(1, 2, 3)) > 0).all())) == reaches
    assert all(p.grad is None for p in head.parameters())  # the trained head itself is untouched


def test_memory_serves_learned_images_in_place_of_the_training_images():
    memory = Memory(MemorySpec(mode="per_class", size=3))
    memory.exemplars = {0: np.array([7, 2, 9]), 1: np.array([4, 5, 6])}
    memory.n_seen = 2
    learned = torch.full((3, 1, 2, 2), 0.5) + torch.arange(3.0).view(3, 1, 1, 1)
    memory.set_images(0, learned)
    loaded = torch.arange(5, dtype=torch.uint8).view(5, 1, 1, 1).expand(5, 1, 2, 2).clone()
    out = memory.substitute(np.array([9, 4, 7, 1, 2]), loaded)
    assert out.dtype == torch.float32
    assert out[:, 0, 0, 0].tolist() == [2.5, 1.0, 0.5, 3.0, 1.5]  # 9 -> row 2, 7 -> row 0, 2 -> row 1
    untouched = loaded[:2]
    assert memory.substitute(np.array([4, 1]), untouched) is untouched  # no learned image among them
    memory.update(2, [], lambda c: np.zeros(0), None, torch.Generator())  # same quota: nothing shrinks
    restored = Memory(memory.spec)
    restored.load_state_dict(memory.state_dict())
    assert torch.equal(restored.substitute(np.array([9]), loaded[:1]), out[:1])
    memory.spec = MemorySpec(mode="total", size=4)  # 4 // 2 = 2 per class: the images shrink with the ranking
    memory.update(2, [], lambda c: np.zeros(0), None, torch.Generator())
    assert memory.substitute(np.array([9, 2]), loaded[:2])[:, 0, 0, 0].tolist() == [0.0, 1.5]


def test_mnemonics_stores_optimised_images_of_every_class_after_the_run(tmp_path):
    cfg = tiny_config("mnemonics", "method.outer_lr=1.0", "method.inner_steps=2", "data.train_per_class=12",
                      "data.test_per_class=4")
    run(cfg, tmp_path, progress=False)
    memory = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)["memory"]
    data = load_data(cfg)
    assert sorted(memory["images"]) == list(range(6))
    for label, images in memory["images"].items():
        original = data.train.load(np.array(memory["exemplars"][label])).float()
        assert images.shape == original.shape and images.min() >= 0 and images.max() <= 255
        assert (images - original).abs().mean() > 0.01  # moved, not just the float round trip
    # the run reports how far the images moved: the last phase's new classes (4, 5) are optimised once and
    # never adjusted again, so their reported change equals the final-minus-herded difference computed here
    report = json.loads((tmp_path / "metrics.json").read_text())["method_report"]["mnemonics"]["phases"]
    assert [p["phase"] for p in report] == [0, 1, 2]
    assert "old" not in report[0] and report[2]["old"]["pixel_change_mean"] > 0.01
    moved = torch.cat([(memory["images"][c] - data.train.load(np.array(memory["exemplars"][c])).float()).abs().flatten()
                       for c in (4, 5)])
    assert math.isclose(report[2]["new"]["pixel_change_mean"], float(moved.mean()), rel_tol=1e-4)
    assert math.isclose(report[2]["new"]["pixel_change_max"], float(moved.max()), rel_tol=1e-4)
    for key in ("new", "old_half0", "old_half1"):
        assert math.isfinite(report[2][key]["outer_loss_before"]) and math.isfinite(report[2][key]["outer_loss_after"])
