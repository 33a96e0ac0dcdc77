"""Puzzle-CAM (Jo & Yu, "Puzzle-CAM: Improved localization via matching partial and full features", ICIP'21).

Training objective ``puzzle``: the image is cut into a 2×2 puzzle (``num_pieces`` = 4), the pieces go
through the classifier on their own, and their class maps are merged back into one map of the full
image's size. With A = W · F_full and Â = W · F_merged the raw class maps (merging maps or features is the
same, the head being linear and bias-free):

    L = L_cls(logits) + L_p-cls(GAP(Â)) + α · L_re,
    L_re = mean |A − Â| over the image's GT classes (zero elsewhere; averaged over all B·C·h·w entries,
           Puzzle-CAM's ``re_loss_option masking`` with its L1 loss),
    α = α_max · min(1, progress / alpha_schedule)  (linear ramp over the first 50 % of training).

``level`` is Puzzle-CAM's ``--level``: ``feature`` (its default, and scarce's) uses the raw class maps A, Â
in both L_p-cls and L_re; ``cam`` first passes *both* through make_cam (relu, then division by each map's
spatial max + 1e-5). α_max = 4 is the Puzzle-CAM recipe's value, which is for the default raw maps.
(Before this was fixed, scarce mixed the two: L_re on make_cam maps, L_p-cls on raw logits.)

The paper trains 15 epochs at batch 32 without frozen BN; the comparison keeps the CAM baseline's recipe
(batch and frozen BN; see configs/methods/puzzle.yaml) so that mainly the objective differs. Inference is the
ordinary CAM. L_p-cls pools with GAP as Puzzle-CAM does, whatever the model's own pooling.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from scarce.cams.base import normalize_cams
from scarce.errors import ConfigError
from scarce.models.classifier import CamModel
from scarce.training.losses import Objective, register_objective

LEVELS = ("feature", "cam")


def _grid(num_pieces: int) -> int:
    side = int(round(num_pieces ** 0.5))
    if side * side != num_pieces or side < 1:
        raise ConfigError(f"puzzle: num_pieces must be a square number (4 = 2×2), got {num_pieces}")
    return side


def tile(images: torch.Tensor, num_pieces: int = 4) -> torch.Tensor:
    """(B, C, H, W) → (B·n, C, H/s, W/s) pieces, row-major within each image (s² = n pieces)."""
    side = _grid(num_pieces)
    b, c, h, w = images.shape
    if h % side or w % side:
        raise ConfigError(f"puzzle: image size {h}x{w} is not divisible into a {side}x{side} grid")
    pieces = images.reshape(b, c, side, h // side, side, w // side)
    return pieces.permute(0, 2, 4, 1, 3, 5).reshape(b * side * side, c, h // side, w // side)


def merge(pieces: torch.Tensor, num_pieces: int = 4) -> torch.Tensor:
    """Inverse of :func:`tile`: (B·n, C, h, w) → (B, C, h·s, w·s)."""
    side = _grid(num_pieces)
    n, c, h, w = pieces.shape
    if n % (side * side):
        raise ValueError(f"{n} pieces do not make whole {side}x{side} puzzles")
    grid = pieces.reshape(n // (side * side), side, side, c, h, w)
    return grid.permute(0, 3, 1, 4, 2, 5).reshape(n // (side * side), c, h * side, w * side)


@register_objective("puzzle")
class PuzzleObjective(Objective):
    def __init__(self, num_classes: int, feature_dim: int, alpha: float = 4.0, alpha_schedule: float = 0.5,
                 num_pieces: int = 4, piece_classification: bool = True, level: str = "feature") -> None:
        super().__init__()
        _grid(num_pieces)
        if alpha < 0 or not 0 <= alpha_schedule <= 1:
            raise ConfigError(f"puzzle: need alpha >= 0 and alpha_schedule in [0, 1], got {alpha}, {alpha_schedule}")
        if level not in LEVELS:
            raise ConfigError(f"puzzle: level must be one of {LEVELS} (Puzzle-CAM's --level), got {level!r}")
        self.alpha_max, self.alpha_schedule = float(alpha), float(alpha_schedule)
        self.num_pieces, self.piece_classification, self.level = num_pieces, piece_classification, level

    def alpha(self, progress: float) -> float:
        if self.alpha_schedule == 0:
            return self.alpha_max
        return self.alpha_max * min(1.0, progress / self.alpha_schedule)

    def forward(self, model: CamModel, images: torch.Tensor, labels: torch.Tensor,
                progress: float) -> tuple[torch.Tensor, dict[str, float]]:
        full = model.features(images)
        merged = merge(model.features(tile(images, self.num_pieces)), self.num_pieces)
        if merged.shape[-2:] != full.shape[-2:]:  # sizes not a multiple of the stride × grid
            merged = F.interpolate(merged, size=full.shape[-2:], mode="bilinear", align_corners=False)
        cls = F.multilabel_soft_margin_loss(model.logits_from_features(full), labels)
        maps, merged_maps = model.class_maps(full), model.class_maps(merged)
        if self.level == "cam":
            maps, merged_maps = normalize_cams(F.relu(maps), "max"), normalize_cams(F.relu(merged_maps), "max")
        p_cls = F.multilabel_soft_margin_loss(merged_maps.mean(dim=(2, 3)), labels)
        mask = labels[:, :, None, None].to(maps.dtype)
        re = ((maps - merged_maps).abs() * mask).mean()
        alpha = self.alpha(progress)
        loss = cls + (p_cls if self.piece_classification else 0.0) + alpha * re
        return loss, {"cls": float(cls.detach()), "p_cls": float(p_cls.detach()), "re": float(re.detach()), "alpha": alpha}
