"""Mnemonics training (Liu, Su, Liu, Schiele & Sun, CVPR 2020): exemplars are learnable images, chosen by
herding and then optimised by bilevel optimisation; the model is LUCIR's (``mnemonics``).

After each phase's model training (the *model level*), the *exemplar level* runs in ``update_memory``:

1. herding picks each new class's exemplars (the memory records their training indices);
2. **new-class exemplars**: the images become a learnable tensor E. For every batch of the phase's training
   data (new data plus old exemplars, augmented, shuffled): a temporary classifier starts from the trained
   head and takes ``inner_steps`` SGD steps (lr ``inner_lr``) on the features of all exemplars (old ones
   fixed, E learnable) — unrolled with ``torch.func.functional_call``, so the steps stay differentiable —
   and its cross-entropy on the batch is the outer loss; one SGD step on E lowers it (lr ``outer_lr``,
   momentum 0.9, weight decay 5e-4, lr × ``outer_decay`` after each of the ``outer_epochs`` passes);
3. **old exemplars** (paper Sec. 4.3, from phase 1 on, ``adjust_old``): each old class's exemplars are split
   into two halves (even and odd herding ranks); each half in turn is learnable and the temporary classifier
   trains on it plus the new-class exemplars, validated on the other half: old data is gone, so the old
   exemplars validate each other;
4. the memory stores the optimised images (pixel scale, clipped to 0-255): from then on every use of an
   exemplar (training batches, class means of the NME head) sees its learned image.

The temporary model is the classifier on top of the backbone (in eval mode, not updated by the exemplar
level): the exemplars' features are computed with gradient, so the outer gradient reaches the pixels
through the unrolled inner steps and the backbone.

The exemplar level runs in fp32 under every ``train.amp`` (the model level follows it): its gradient is a
second-order one through ``inner_steps`` unrolled SGD steps, and it moves pixels by ``outer_lr`` (1e-5)
times that gradient. fp16 would need its loss scale carried through the double backward (small gradients
flush to zero below 6e-5) and bf16 keeps 3 significant digits, coarser than the changes this level makes
and measures (``pixel_change_*``); it runs once per phase, so autocast would save little.

Defaults and their sources (the released code ``mnemonics-training/1_train``): ``outer_epochs: 1``
(``--mnemonics_total_epochs``), ``outer_lr: 1e-5`` (``--mnemonics_outer_lr``), ``outer_decay: 0.5``
(``--mnemonics_decay_factor``, every epoch), ``inner_steps: 20`` (``--mnemonics_steps``), ``inner_lr: 0.1``
(``--maml_lr``, the code's fast classifier trained on exemplars). Departures, stated:

- The released trainer has no unrolled inner loop: its "classifier trained on the exemplars" is the
  cosine-to-class-means classifier (new-class means from the learnable exemplars' features, old-class means
  fixed), and it optimises the new-class exemplars only. Here the inner model is trained for
  ``inner_steps`` steps, as the paper's bilevel formulation (Eqs. 8-9) states, and old exemplars are
  adjusted as its Sec. 4.3 describes.
- The code converts the optimised images back to uint8 (``astype``, truncating); here they are kept as float
  pixels (a step of lr 1e-5 is far below one grey level and would otherwise be lost or truncated to −1).
- The code's model after phase 0 is its scale-and-shift ResNet (frozen kernels times learnable scales, the
  stable block of AANets) trained with the iCaRL loss; here the model is scarce's LUCIR (the "Mnemonics" row
  of the AANets and RMM tables is LUCIR with mnemonics exemplars).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call

from scarce.cil.methods.base import Learner, PhaseContext
from scarce.cil.methods.lucir import LUCIR, LUCIRParams


def unrolled_outer_loss(head: nn.Module, start: dict[str, torch.Tensor], train_features: torch.Tensor,
                        train_labels: torch.Tensor, query_features: torch.Tensor, query_labels: torch.Tensor,
                        steps: int, lr: float) -> torch.Tensor:
    """Cross-entropy on the query of a temporary ``head`` trained for ``steps`` SGD steps (lr ``lr``) on the
    training features, starting from the parameters ``start``. The inner steps are kept in the graph, so the
    result is differentiable with respect to ``train_features`` (and what they were computed from)."""
    params = {name: p.detach().requires_grad_(True) for name, p in start.items()}
    for _ in range(steps):
        inner = F.cross_entropy(functional_call(head, params, (train_features,)), train_labels)
        grads = torch.autograd.grad(inner, list(params.values()), create_graph=True)
        params = {name: p - lr * g for (name, p), g in zip(params.items(), grads)}
    return F.cross_entropy(functional_call(head, params, (query_features,)), query_labels)


@dataclass
class MnemonicsParams(LUCIRParams):
    outer_epochs: int = 1  # passes over the validation data per exemplar set (--mnemonics_total_epochs)
    outer_lr: float = 1e-5  # SGD on the exemplar pixels, momentum 0.9, weight decay 5e-4 (--mnemonics_outer_lr)
    outer_decay: float = 0.5  # lr factor after each pass (--mnemonics_decay_factor)
    inner_steps: int = 20  # unrolled SGD steps of the temporary classifier (--mnemonics_steps)
    inner_lr: float = 0.1  # (--maml_lr)
    adjust_old: bool = True  # paper Sec. 4.3: old exemplars adjusted by the two-halves split


class MnemonicsMixin(Learner):
    """Mnemonics exemplars on top of a learner with a memory (put it first among the bases)."""

    def update_memory(self, ctx: PhaseContext) -> None:
        query = self.train_indices(ctx)  # the phase's training set (the memory before its update)
        super().update_memory(ctx)
        memory = ctx.memory
        old = [c for c in range(ctx.n_old) if c in memory.exemplars]
        new = list(ctx.new_labels)
        images = {c: ctx.load(memory.exemplars[c], None) for c in old + new}  # normalised, learned ones included
        before = {c: ctx.pixels(images[c]) for c in old + new}
        was_training = self.net.training
        self.net.eval()
        log: dict[str, Any] = {"phase": ctx.phase}
        try:
            learned, log["new"] = self.optimise(ctx, [images[c] for c in new], new, [images[c] for c in old], old,
                                                query, "new")
            for c, x in zip(new, learned):
                images[c] = x
            if ctx.phase > 0 and self.params.adjust_old and old:
                for half in (0, 1):
                    learn = [images[c][half::2] for c in old]
                    check = np.concatenate([memory.exemplars[c][1 - half :: 2] for c in old])
                    fixed = [images[c] for c in new]
                    learned, log[f"old_half{half}"] = self.optimise(ctx, learn, old, fixed, new, check, f"old{half}")
                    for c, x in zip(old, learned):
                        images[c][half::2] = x
        finally:
            self.net.train(was_training)
        changed = (old + new) if (ctx.phase > 0 and self.params.adjust_old) else new
        for c in changed:
            memory.set_images(c, ctx.pixels(images[c]))
        # How far the stored images moved this phase, in grey levels (0-255), after clipping to pixel range:
        # the evidence of whether the exemplar level changed anything at the configured outer_lr.
        for group, classes in (("new", new), ("old", [c for c in changed if c in old])):
            if classes:
                diffs = torch.cat([(ctx.pixels(images[c]) - before[c]).abs().flatten() for c in classes])
                log.setdefault(group, {}).update(pixel_change_mean=float(diffs.mean()),
                                                 pixel_change_max=float(diffs.max()))
        self.log_phase("mnemonics", "phases", log)

    def optimise(self, ctx: PhaseContext, learn: list[torch.Tensor], learn_labels: list[int],
                 fixed: list[torch.Tensor], fixed_labels: list[int], query: np.ndarray, tag: str
                 ) -> tuple[list[torch.Tensor], dict[str, float]]:
        """Outer loop: the images ``learn`` (one tensor per class of ``learn_labels``) move to lower the loss on
        the ``query`` training indices of a classifier trained on them plus the ``fixed`` images. Also returns
        the outer loss on the first query batch before and after the loop (same batch, same augmentation)."""
        p = self.params
        sizes = [len(x) for x in learn]
        if not sum(sizes) or not len(query):
            return learn, {}
        x = torch.cat(learn).detach().clone().requires_grad_(True)
        y = torch.cat([torch.full((n,), c, dtype=torch.long) for n, c in zip(sizes, learn_labels)]).to(ctx.device)
        backbone, head = self.net.backbone, self.net.head
        with torch.no_grad():
            fixed_x = torch.cat(fixed) if fixed else x.new_zeros((0, *x.shape[1:]))
            fixed_f = backbone(fixed_x)[0] if len(fixed_x) else x.new_zeros((0, backbone.out_dim))
        fixed_y = torch.cat([torch.full((len(f),), c, dtype=torch.long) for f, c in zip(fixed, fixed_labels)]
                            ).to(ctx.device) if fixed else y[:0]
        start = dict(head.named_parameters())
        all_y = torch.cat([fixed_y, y])
        probe = query[: ctx.batch_size]
        with torch.no_grad():
            probe_f = backbone(ctx.load(probe, ctx.generator("mnemonics", tag, "probe")))[0]

        def probe_loss() -> float:
            features = torch.cat([fixed_f, backbone(x)[0]])
            loss = unrolled_outer_loss(head, start, features, all_y, probe_f, ctx.targets(probe),
                                       p.inner_steps, p.inner_lr)
            return float(loss.detach())

        stats = {"outer_loss_before": probe_loss()}
        opt = torch.optim.SGD([x], lr=p.outer_lr, momentum=0.9, weight_decay=5e-4)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=p.outer_decay)
        for epoch in range(p.outer_epochs):
            perm = torch.randperm(len(query), generator=ctx.generator("mnemonics", tag, epoch)).numpy()
            for s in range(0, len(query), ctx.batch_size):
                batch = query[perm[s : s + ctx.batch_size]]
                with torch.no_grad():
                    q = backbone(ctx.load(batch, ctx.generator("mnemonics", tag, epoch, s)))[0]
                features = torch.cat([fixed_f, backbone(x)[0]])
                loss = unrolled_outer_loss(head, start, features, all_y, q, ctx.targets(batch),
                                           p.inner_steps, p.inner_lr)
                (x.grad,) = torch.autograd.grad(loss, [x])
                opt.step()
            sched.step()
        stats["outer_loss_after"] = probe_loss()
        return list(x.detach().split(sizes)), stats


class Mnemonics(MnemonicsMixin, LUCIR):
    name = "mnemonics"
    Params = MnemonicsParams
