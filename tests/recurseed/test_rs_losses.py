"""RecurSeed's pieces against hand computations: CF, the normalised CAM, L_seg with 255, the masked L_rec."""

from __future__ import annotations

import math

import pytest
import torch

from scarce.segmentation.train import labelled_cross_entropy
from scarce.singlestage.objective import current_epoch
from scarce.singlestage.recurseed import confident_labels, masked_l1, normalised_cams, scatter_classes


def test_cf_on_a_hand_case():
    # 3 classes; the image has classes 0 and 2 (class 1's plane must be ignored even where it is high)
    maps = torch.tensor([[[[0.90, 0.30, 0.05, 0.20]],
                          [[0.99, 0.99, 0.99, 0.99]],
                          [[0.10, 0.60, 0.08, 0.56]]]])  # (1, 3, 1, 4)
    labels = confident_labels(maps, [[0, 2]], fg=0.55, bg=0.10)
    # best of classes 0 and 2: 0.90 (class 0) > δ_fg → 1; 0.60 (class 2) → 3; 0.08 < δ_bg → 0; 0.56 (class 2) → 3
    assert labels.tolist() == [[[1, 3, 0, 3]]]
    maps[0, 2, 0, 3] = 0.2  # best 0.20, between δ_bg and δ_fg → 255
    assert confident_labels(maps, [[0, 2]], fg=0.55, bg=0.10).tolist() == [[[1, 3, 0, 255]]]
    assert confident_labels(maps, [[]], fg=0.55, bg=0.10).tolist() == [[[0, 0, 0, 0]]]  # no class: background


def test_normalised_cam_is_relu_over_the_max():
    cams = torch.tensor([[[[0.0, 2.0], [-1.0, 4.0]]]])
    out = normalised_cams(cams, (2, 2))  # same size: no resampling
    eps = 1e-5
    expected = [[max(0.0, 0.0 - eps) / (4 + eps), (2 - eps) / (4 + eps)], [0.0, (4 - eps) / (4 + eps)]]
    assert torch.allclose(out[0, 0], torch.tensor(expected))


def test_seg_loss_ignores_255_by_hand():
    logits = torch.tensor([[[[2.0, 0.0, 1.0]], [[0.0, 1.0, 3.0]]]])  # (1, 2 classes, 1, 3)
    target = torch.tensor([[[0, 255, 1]]])
    # pixel 0: −log(e²/(e² + 1)); pixel 1 ignored; pixel 2: −log(e³/(e + e³)); mean over the two labelled pixels
    hand = (-math.log(math.exp(2) / (math.exp(2) + 1)) - math.log(math.exp(3) / (math.exp(1) + math.exp(3)))) / 2
    assert float(labelled_cross_entropy(logits, target)) == pytest.approx(hand, rel=1e-6)
    assert float(labelled_cross_entropy(logits, torch.full((1, 1, 3), 255))) == 0.0


def test_rec_loss_counts_only_the_image_classes_by_hand():
    predicted = torch.tensor([[[[0.2, 0.8]], [[0.5, 0.5]], [[1.0, 0.0]]]])  # (1, 3, 1, 2)
    target = torch.tensor([[[[0.0, 1.0]], [[0.0, 0.0]], [[0.5, 0.5]]]])
    labels = torch.tensor([[1.0, 0.0, 1.0]])  # class 1's error (1.0 in total) must not count
    # |diffs| of classes 0 and 2: 0.2 + 0.2 + 0.5 + 0.5 = 1.4, averaged over all 3 × 2 entries (Puzzle-CAM's mean)
    assert float(masked_l1(predicted, target, labels)) == pytest.approx(1.4 / 6)


def test_scatter_puts_each_image_classes_in_their_planes():
    maps = [torch.full((2, 1, 1), 0.5), torch.full((0, 1, 1), 0.0)]
    out = scatter_classes(maps, [[0, 2], []], 3)
    assert out[:, :, 0, 0].tolist() == [[0.5, 0.0, 0.5], [0.0, 0.0, 0.0]]


@pytest.mark.parametrize("steps_per_epoch, epochs", [(3, 20), (7, 5), (1, 13)])
def test_the_epoch_of_a_step_from_the_trainer_progress(steps_per_epoch, epochs):
    total = steps_per_epoch * epochs
    assert [current_epoch(step / total, epochs) for step in range(total)] == \
        [step // steps_per_epoch for step in range(total)]


def test_without_scg_and_pamr_the_seed_is_the_cam_itself():
    """RS with neither refinement: M_rs = the normalised CAM, so L_rec is 0 and L_seg trains on CF(CAM)."""
    from scarce.models import ModelConfig
    from scarce.singlestage import MixConfig, NetworkConfig, RecurSeedConfig, SingleStageObjective, build_network
    from scarce.singlestage.network import DecoderConfig

    torch.manual_seed(0)
    net = build_network(NetworkConfig(ModelConfig(backbone="test_efficientnet", pretrained=None),
                                      DecoderConfig(channels=8)), num_classes=3).eval()
    torch.nn.init.normal_(net.classifier.classifier.weight, std=1.0)
    objective = SingleStageObjective(RecurSeedConfig(use_scg=False, use_pamr=False), MixConfig(), epochs=1)
    images, labels = torch.randn(2, 3, 32, 32), torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    loss, parts = objective(net, images, labels, 0.0)
    assert parts["rec"] == 0.0 and set(parts) == {"cls", "seg", "rec"}
    with torch.no_grad():
        out = net(images)
    cams = normalised_cams(out.cams, (32, 32))
    targets = confident_labels(cams, [[0, 2], [1]], 0.55, 0.10)
    assert parts["seg"] == pytest.approx(float(labelled_cross_entropy(out.seg_logits, targets)), rel=1e-5)
    assert float(loss.detach()) == pytest.approx(parts["cls"] + parts["seg"], rel=1e-5)
