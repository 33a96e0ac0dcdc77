"""Puzzle-CAM: tiling then merging is the identity, the α ramp, and the objective's terms."""

from __future__ import annotations

import math

import pytest
import torch

from scarce.errors import ConfigError
from scarce.methods.puzzle import PuzzleObjective, merge, tile
from scarce.models.classifier import CamModel


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


class HalfCentred(CamModel):
    """F(x) = x − mean(x)/2 per image (1 channel, stride 1): a piece sees another mean than the whole image."""

    num_classes = 2

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return images - 0.5 * images.mean(dim=(2, 3), keepdim=True)

    @property
    def class_weights(self) -> torch.Tensor:
        return torch.tensor([[1.0], [-2.0]])

    def logits_from_features(self, features: torch.Tensor) -> torch.Tensor:
        return features.mean(dim=(2, 3)) @ self.class_weights.T


def soft_margin(logits: list[float], labels: list[int]) -> float:
    return sum(math.log1p(math.exp(-z if y else z)) for z, y in zip(logits, labels)) / len(logits)


@pytest.mark.parametrize("level", ["feature", "cam"])
def test_objective_against_a_hand_computation(level):
    # image [[1, 3], [5, 7]] (mean 4): F_full = x − 2 = [[-1, 1], [3, 5]]; each 1-pixel piece is its own mean,
    # so F_merged = x/2 = [[.5, 1.5], [2.5, 3.5]]. Class maps: W = (1, −2); only class 0 is in the image.
    images, labels = torch.tensor([[[[1.0, 3.0], [5.0, 7.0]]]]), torch.tensor([[1.0, 0.0]])
    loss, parts = PuzzleObjective(2, 1, level=level)(HalfCentred(), images, labels, 0.25)  # α = 4 · 0.25/0.5 = 2
    cls = soft_margin([2.0, -4.0], [1, 0])  # GAP(F_full) = 2 → logits (2, −4)
    if level == "feature":  # raw maps (Puzzle-CAM's default): GAP(Â) = (2, −4); |A − Â| of class 0 sums to 4
        p_cls, re = soft_margin([2.0, -4.0], [1, 0]), 4.0 / 8
    else:  # make_cam: class 0 [[0, .2], [.6, 1]] vs [[1/7, 3/7], [5/7, 1]], class 1 of Â is all zero
        p_cls, re = soft_margin([4 / 7, 0.0], [1, 0]), (1 / 7 + (3 / 7 - 0.2) + (5 / 7 - 0.6)) / 8
    assert parts["alpha"] == 2.0
    assert parts["cls"] == pytest.approx(cls, rel=1e-5) and parts["p_cls"] == pytest.approx(p_cls, rel=1e-4)
    assert parts["re"] == pytest.approx(re, rel=1e-4)
    assert float(loss.detach()) == pytest.approx(cls + p_cls + 2.0 * re, rel=1e-4)
    with pytest.raises(ConfigError, match="level"):
        PuzzleObjective(2, 1, level="logits")
