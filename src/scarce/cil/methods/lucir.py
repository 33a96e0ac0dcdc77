"""LUCIR (Hou et al. 2019): cosine classifier, less-forget constraint with the adaptive weight, margin
ranking loss on hard new-class negatives; class-balanced finetuning as an option.

Defaults follow the CIFAR-100 settings of the LUCIR code (``--lamda 5 --adapt_lamda --mr_loss --dist 0.5
--K 2 --lw_mr 1``): old-class weights are frozen during an incremental phase and the new-class weights are
imprinted with the normalised mean of each new class's normalised features, scaled to the mean norm of the
old-class weights (``--imprint_weights``).

Class-balanced finetuning is off by default, as in LUCIR: it exists only in the code's ImageNet script
``cbf_class_incremental_cosine_imagenet.py`` (``--cb_finetune``). ``balanced_finetune: true`` runs that
script's default (``--ft_flag 2``) after each incremental phase: every class weight (old and new, not σ)
is trained on the exemplar memory with the backbone frozen and batch norm in eval mode, the run's
augmentation, weight decay and batch size, SGD (momentum 0.9) at lr 0.01 for 20 epochs, divided by 10 at
epoch 10, with the phase's losses: cross-entropy plus margin ranking (the less-forget term compares backbone
features only, which are frozen here, so it is a constant and is left out).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

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
    balanced_finetune: bool = False  # class-balanced finetuning after each incremental phase (--cb_finetune)
    balanced_finetune_epochs: int = 20  # --ft_epochs
    balanced_finetune_lr: float = 0.01  # --ft_base_lr
    balanced_finetune_milestones: list[int] = field(default_factory=lambda: [10])  # --ft_lr_strat (lr × 0.1)


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
        scale = self.net.head.mean_weight_norm()
        return torch.stack([
            F.normalize(self.extract(ctx, ctx.scenario.class_indices(c)).mean(0), dim=0) * scale
            for c in ctx.new_labels
        ])

    def supervised_loss(self, out, y, ctx):
        ce = F.cross_entropy(out["logits"], y)
        if self.teacher is None:
            return ce, {"ce": ce.item()}
        mr = self.margin_ranking(out["features"], y, ctx)
        return ce + mr, {"ce": ce.item(), "mr": mr.item()}

    def distillation(self, out, x, ctx):
        """The less-forget constraint ``lamda_base·sqrt(n_old/n_new)·(1 − cos(f, f_old))``, batch mean."""
        with torch.no_grad():
            old_feat = self.teacher.backbone(x)[0]
        lamda = self.params.lamda_base * math.sqrt(ctx.n_old / ctx.n_new)
        lf = (1 - F.cosine_similarity(out["features"], old_feat, dim=1)).mean() * lamda
        return lf, {"lf": lf.item()}

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
        p = self.params
        if ctx.phase > 0 and p.balanced_finetune:
            balanced_head_finetune(
                self, ctx, list(self.net.head.blocks), p.balanced_finetune_epochs, p.balanced_finetune_lr,
                lambda f, y: F.cross_entropy(self.net.head(f), y) + self.margin_ranking(f, y, ctx),
                augment=True, weight_decay=ctx.weight_decay, milestones=p.balanced_finetune_milestones,
            )
        super().after_phase(ctx)
