"""LUCIR (Hou et al. 2019): cosine classifier, less-forget constraint with the adaptive weight, margin
ranking loss on hard new-class negatives, class-balanced finetuning.

Defaults follow the CIFAR-100 settings of the LUCIR code (``--lamda 5 --adapt_lamda --mr_loss --dist 0.5
--K 2 --lw_mr 1``): old-class weights are frozen during an incremental phase and the new-class weights are
imprinted with the normalised mean feature of each new class.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from scarce.cil.methods.base import Learner, PhaseContext, balanced_head_finetune


@dataclass
class LUCIRParams:
    lamda_base: float = 5.0  # less-forget weight; adaptive: lamda_base * sqrt(n_old / n_new) (10 on ImageNet)
    K: int = 2  # hard negatives for the margin ranking loss
    margin: float = 0.5  # margin of the ranking loss (``dist``)
    lw_mr: float = 1.0  # weight of the margin ranking loss
    imprint: bool = True  # initialise new-class weights from the class feature means
    balanced_finetune_epochs: int = 20  # class-balanced finetuning of the classifier after each incremental phase (0: off)
    balanced_finetune_lr: float = 0.01


class LUCIR(Learner):
    name = "lucir"
    Params = LUCIRParams
    head = "cosine"
    last_relu = False
    has_nme = True
    needs_teacher = True
    primary_head = "cnn"
    freeze_old_classes = True

    def init_new_weights(self, ctx: PhaseContext) -> torch.Tensor | None:
        if ctx.phase == 0 or not self.params.imprint:
            return None
        return torch.stack([self.extract(ctx, ctx.scenario.class_indices(c)).mean(0) for c in ctx.new_labels])

    def loss(self, x, y, ctx):
        out = self.net(x)
        ce = F.cross_entropy(out["logits"], y)
        if self.teacher is None:
            return ce, {"ce": ce.item()}
        with torch.no_grad():
            old_feat = self.teacher.backbone(x)[0]
        lamda = self.params.lamda_base * math.sqrt(ctx.n_old / ctx.n_new)
        lf = (1 - F.cosine_similarity(out["features"], old_feat, dim=1)).mean() * lamda
        mr = self.margin_ranking(out["features"], y, ctx)
        return ce + lf + mr, {"ce": ce.item(), "lf": lf.item(), "mr": mr.item()}

    def margin_ranking(self, features: torch.Tensor, y: torch.Tensor, ctx: PhaseContext) -> torch.Tensor:
        """For each old-class sample: max(0, m - cos(gt) + cos(neg)) over its K highest new-class cosines."""
        old = y < ctx.n_old
        k = min(self.params.K, ctx.n_new)
        if not bool(old.any()) or k == 0:
            return features.sum() * 0
        cos = self.net.head.cosine(features[old])
        gt = cos.gather(1, y[old].unsqueeze(1)).expand(-1, k)
        hard = cos[:, ctx.n_old :].topk(k, dim=1).values
        target = torch.ones_like(gt)
        return F.margin_ranking_loss(gt.reshape(-1), hard.reshape(-1), target.reshape(-1), margin=self.params.margin) * self.params.lw_mr

    def after_phase(self, ctx: PhaseContext) -> None:
        if ctx.phase > 0:
            balanced_head_finetune(self, ctx, self.params.balanced_finetune_epochs, self.params.balanced_finetune_lr,
                                   lambda f, y: F.cross_entropy(self.net.head(f), y))
        super().after_phase(ctx)
