"""Puzzle-CAM: tiling then merging is the identity, the α ramp, and the objective's terms."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from scarce.errors import ConfigError
from scarce.methods.puzzle import PuzzleObjective, merge, tile
from scarce.methods.recam import normalized_cams


def test_tile_then_merge_is_the_identity():
    x = torch.randn(3, 5, 8, 6)
    pieces = tile(x, 4)
    assert pieces.shape == (12, 5, 4, 3)
    assert torch.equal(pieces[0], x[0, :, :4, :3]) and torch.equal(pieces[1], x[0, :, :4, 3:])
    assert torch.equal(pieces[2], x[0, :, 4:, :3]) and torch.equal(pieces[7], x[1, :, 4:, 3:])
    assert torch.equal(merge(pieces, 4), x)
    assert torch.equal(merge(tile(x, 1), 1), x)
    with pytest.raises(ConfigError):
        tile(torch.zeros(1, 1, 5, 4), 4)
    with pytest.raises(ConfigError):
        PuzzleObjective(2, 8, num_pieces=3)


def test_alpha_ramps_linearly_over_the_first_half():
    objective = PuzzleObjective(2, 8, alpha=4.0, alpha_schedule=0.5)
    assert [objective.alpha(p) for p in (0.0, 0.25, 0.5, 0.9)] == [0.0, 2.0, 4.0, 4.0]


def test_objective_is_cls_plus_piece_cls_plus_masked_reconstruction(tiny_model):
    objective = PuzzleObjective(4, tiny_model.class_weights.shape[1])
    images, labels = torch.randn(2, 3, 128, 128), torch.tensor([[1.0, 0, 0, 1], [0, 1, 0, 0]])
    loss, parts = objective(tiny_model, images, labels, 0.25)
    full = tiny_model.features(images)
    merged = merge(tiny_model.features(tile(images)))
    re = ((normalized_cams(tiny_model, full) - normalized_cams(tiny_model, merged)).abs() * labels[:, :, None, None]).mean()
    expected = (F.multilabel_soft_margin_loss(tiny_model.logits_from_features(full), labels)
                + F.multilabel_soft_margin_loss(tiny_model.logits_from_features(merged), labels) + 2.0 * re)
    assert torch.isclose(loss, expected, atol=1e-5)
    assert parts["alpha"] == 2.0 and parts["re"] > 0
