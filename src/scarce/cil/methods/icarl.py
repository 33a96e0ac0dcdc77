"""iCaRL (Rebuffi et al. 2017): herding exemplars, distillation, nearest-mean-of-exemplars classification."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from scarce.cil.methods.base import Learner, kd_loss
from scarce.errors import ConfigError


@dataclass
class ICaRLParams:
    loss: str = "bce"  # bce: the paper's sigmoid BCE with the old model's outputs as targets; ce_kd: CE + beta*T²*KD
    T: float = 2.0  # ce_kd only (LUCIR/AANets codebase: icarl_T = 2)
    beta: float = 0.25  # ce_kd only (icarl_beta = 0.25)

    def __post_init__(self) -> None:
        if self.loss not in ("bce", "ce_kd"):
            raise ConfigError(f"method.loss must be bce or ce_kd, got {self.loss!r}")


class ICaRL(Learner):
    """Trains on new data plus exemplars. ``bce``: binary cross-entropy on every seen class, the targets of
    the old classes being the old model's sigmoid outputs (the paper), averaged over samples and classes.
    ``ce_kd``: the iCaRL baseline of the LUCIR/AANets code, cross-entropy over all seen classes plus
    ``beta * T² * KL`` between the old model's and the current model's old-class outputs at temperature T
    (batch mean). Evaluated with the nearest mean of exemplars (``nme``, the paper's classifier) and the
    trained head (``cnn``)."""

    name = "icarl"
    Params = ICaRLParams
    has_nme = True
    needs_teacher = True
    primary_head = "nme"

    def supervised_loss(self, out, y, ctx):
        logits = out["logits"]
        if self.params.loss == "bce":  # the new-class columns, one-hot targets (old columns: distillation)
            n_old = ctx.n_old if self.teacher is not None else 0
            targets = F.one_hot(y, logits.shape[1]).to(logits.dtype)[:, n_old:]
            bce = F.binary_cross_entropy_with_logits(logits[:, n_old:], targets, reduction="sum") / logits.numel()
            return bce, {"bce": bce.item()}
        ce = F.cross_entropy(logits, y)
        return ce, {"ce": ce.item()}

    def distillation(self, out, x, ctx):
        logits = out["logits"]
        with torch.no_grad():
            old = self.teacher(x)["logits"]
        if self.params.loss == "bce":  # the old-class columns, the old model's sigmoid outputs as targets
            bce = F.binary_cross_entropy_with_logits(logits[:, : ctx.n_old], torch.sigmoid(old), reduction="sum")
            bce = bce / logits.numel()  # together with supervised_loss: the mean over samples and all classes
            return bce, {"bce_old": bce.item()}
        kd = kd_loss(logits[:, : ctx.n_old], old, self.params.T, t_squared=True)
        return self.params.beta * kd, {"kd": kd.item()}
