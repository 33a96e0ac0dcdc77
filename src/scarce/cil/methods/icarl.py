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

    def loss(self, x, y, ctx):
        logits = self.net(x)["logits"]
        old = None
        if self.teacher is not None:
            with torch.no_grad():
                old = self.teacher(x)["logits"]
        if self.params.loss == "bce":
            targets = F.one_hot(y, logits.shape[1]).to(logits.dtype)
            if old is not None:
                targets[:, : ctx.n_old] = torch.sigmoid(old)
            loss = F.binary_cross_entropy_with_logits(logits, targets)
            return loss, {"bce": loss.item()}
        ce = F.cross_entropy(logits, y)
        if old is None:
            return ce, {"ce": ce.item()}
        kd = kd_loss(logits[:, : ctx.n_old], old, self.params.T, t_squared=True)
        return ce + self.params.beta * kd, {"ce": ce.item(), "kd": kd.item()}
