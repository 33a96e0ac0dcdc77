"""PODNet (Douillard et al. 2020): POD-spatial and POD-flat distillation, local-similarity classifier (LSC)
trained with the NCA loss, class-balanced finetuning, CNN and NME evaluation.

Defaults from the paper and the CIFAR-100 configuration of the PODNet code: 10 proxies per class, NCA margin
0.6, POD-spatial factor 3, POD-flat factor 1, both multiplied by sqrt(n_seen / n_new); old-class proxies
frozen during an incremental phase (``groupwise_factors: old_weights: 0``); new-class proxies imprinted by
k-means on the class's normalised features, the centres scaled to the mean norm of the existing proxies
(``add_imprinted_classes``); class-balanced finetuning of the proxies (not the scale: ``tuning: classifier``)
for 20 epochs at learning rate 0.05.
The finetuning departs from the code to take seconds: features of the memory are computed once, without
augmentation, and no weight decay is applied (the code trains on augmented memory with weight decay 5e-4).

The NCA loss follows the paper (margin on the true class only, positive excluded from the denominator,
hinged at 0). The released code subtracts the margin from every similarity (the per-class margin tensor it
builds is unused), subtracts each row's maximum and leaves exp(0) = 1 in the positive's place in the
denominator; ``nca_margin: 0`` comes closest to that behaviour.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from scarce.cil.methods.base import Learner, PhaseContext, balanced_head_finetune


@dataclass
class PODNetParams:
    proxies: int = 10
    nca_margin: float = 0.6
    pod_spatial: float = 3.0
    pod_flat: float = 1.0
    imprint: bool = True
    balanced_finetune_epochs: int = 20
    balanced_finetune_lr: float = 0.05
    kmeans_iterations: int = 20


def pod_spatial_loss(maps: list[torch.Tensor], old_maps: list[torch.Tensor]) -> torch.Tensor:
    """POD-spatial: squared activations pooled along width and along height, concatenated, L2-normalised per
    sample; the Euclidean distance between old and new, averaged over samples and stages."""
    total = maps[0].new_zeros(())
    for a, b in zip(maps, old_maps):
        a, b = a.pow(2), b.pow(2)
        pa = F.normalize(torch.cat([a.sum(dim=3).flatten(1), a.sum(dim=2).flatten(1)], dim=1), dim=1)
        pb = F.normalize(torch.cat([b.sum(dim=3).flatten(1), b.sum(dim=2).flatten(1)], dim=1), dim=1)
        total = total + (pa - pb).norm(dim=1).mean()
    return total / len(maps)


def nca_loss(similarity: torch.Tensor, y: torch.Tensor, scale: torch.Tensor, margin: float) -> torch.Tensor:
    """NCA with margin: ``max(0, -log(exp(s(y_hat_y - margin)) / sum_{c != y} exp(s y_hat_c)))``."""
    logits = scale * (similarity - margin * F.one_hot(y, similarity.shape[1]).to(similarity.dtype))
    positive = logits.gather(1, y.unsqueeze(1)).squeeze(1)
    negatives = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf"))
    return F.relu(torch.logsumexp(negatives, dim=1) - positive).mean()


def kmeans(x: torch.Tensor, k: int, iterations: int, generator: torch.Generator) -> torch.Tensor:
    """Lloyd's k-means on rows of ``x``, seeded with k-means++ as scikit-learn's ``KMeans`` that the PODNet code
    calls (each further seed drawn with probability proportional to its squared distance to the nearest seed
    so far; random seeds alone often put two centres in one cluster). An empty cluster keeps its centre."""
    if len(x) < k:
        x = x.repeat((k + len(x) - 1) // len(x), 1)
    chosen = [int(torch.randint(len(x), (1,), generator=generator))]
    d2 = (x - x[chosen[0]]).pow(2).sum(1)
    for _ in range(1, k):
        weights = d2.cpu().double()
        if weights.sum() > 0:
            chosen.append(int(torch.multinomial(weights / weights.sum(), 1, generator=generator)))
        else:  # every row coincides with a seed
            chosen.append(int(torch.randint(len(x), (1,), generator=generator)))
        d2 = torch.minimum(d2, (x - x[chosen[-1]]).pow(2).sum(1))
    centres = x[chosen].clone()
    for _ in range(iterations):
        assign = torch.cdist(x, centres).argmin(dim=1)
        for j in range(k):
            members = x[assign == j]
            if len(members):
                centres[j] = members.mean(0)
    return centres


class PODNet(Learner):
    name = "podnet"
    Params = PODNetParams
    head = "lsc"
    last_relu = False
    has_nme = True
    needs_teacher = True
    primary_head = "cnn"
    freeze_old_classes = True

    def init_new_weights(self, ctx: PhaseContext) -> torch.Tensor | None:
        if ctx.phase == 0 or not self.params.imprint:
            return None
        gen = ctx.generator("imprint")
        scale = self.net.head.mean_weight_norm()
        proxies = [
            kmeans(self.extract(ctx, ctx.scenario.class_indices(c)), self.params.proxies, self.params.kmeans_iterations, gen)
            * scale
            for c in ctx.new_labels
        ]
        return torch.cat(proxies)

    def _nca(self, features: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        head = self.net.head
        return nca_loss(head.similarity(features), y, head.effective_scale, self.params.nca_margin)

    def supervised_loss(self, out, y, ctx):
        nca = self._nca(out["features"], y)
        return nca, {"nca": nca.item()}

    def distillation(self, out, x, ctx):
        """POD-spatial and POD-flat, each times its factor and ``sqrt(n_seen / n_new)``."""
        with torch.no_grad():
            old_feat, old_maps = self.teacher.backbone(x)
        factor = math.sqrt(ctx.n_seen / ctx.n_new)
        spatial = pod_spatial_loss(out["maps"], old_maps) * self.params.pod_spatial * factor
        flat = (1 - F.cosine_similarity(out["features"], old_feat, dim=1)).mean() * self.params.pod_flat * factor
        return spatial + flat, {"pod_spatial": spatial.item(), "pod_flat": flat.item()}

    def after_phase(self, ctx: PhaseContext) -> None:
        if ctx.phase > 0:
            balanced_head_finetune(self, ctx, list(self.net.head.blocks), self.params.balanced_finetune_epochs,
                                   self.params.balanced_finetune_lr, self._nca)
        super().after_phase(ctx)
