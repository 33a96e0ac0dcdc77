"""Each method's loss and classifier against an independent reference: plain-Python arithmetic on tiny
tensors (``math``, loops), the official code's own formulation with ``torch.nn`` losses, or scikit-learn."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn as nn
from sklearn.cluster import KMeans

from scarce.cil.methods import ICaRL, LUCIR, LwF, PODNet
from scarce.cil.models import CosineHead, LSCHead

DEVICE = torch.device("cpu")


# --- plain-Python references -------------------------------------------------------------------------

def softmax(v):
    m = max(v)
    e = [math.exp(a - m) for a in v]
    return [a / sum(e) for a in e]


def cross_entropy(rows, labels):
    return sum(-math.log(softmax(r)[y]) for r, y in zip(rows, labels)) / len(rows)


def kl_batchmean(student, teacher, T):
    """mean over rows of sum_j p_t(j) (log p_t(j) - log p_s(j)), both softened by T."""
    total = 0.0
    for s, t in zip(student, teacher):
        ps, pt = softmax([a / T for a in s]), softmax([a / T for a in t])
        total += sum(b * (math.log(b) - math.log(a)) for a, b in zip(ps, pt))
    return total / len(student)


def sigmoid(a):
    return 1 / (1 + math.exp(-a))


def cos(u, v):
    dot = sum(a * b for a, b in zip(u, v))
    return dot / (math.sqrt(sum(a * a for a in u)) * math.sqrt(sum(b * b for b in v)))


def unit(v):
    n = math.sqrt(sum(a * a for a in v))
    return [a / n for a in v]


class FeaturesAreInputs(nn.Module):
    """A backbone whose feature vector is its input, so that a test chooses the features exactly."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.out_dim = dim
        self.unused = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return x, [x[:, :, None, None]]


def learner(cls, dim, **params):
    return cls(cls.Params(**params), FeaturesAreInputs(dim), DEVICE)


def logits_net(logits):
    """Stands in for a network: returns fixed logits whatever the batch."""
    return lambda x: {"logits": logits}


tensor = torch.tensor
CTX = SimpleNamespace(n_old=2, n_new=2, n_seen=4)
STUDENT = [[1.0, -0.5, 2.0, 0.3], [0.2, 0.4, -1.0, 1.5], [-0.7, 0.9, 0.1, 0.0]]
TEACHER = [[0.5, 1.0], [2.0, -1.0], [-0.3, 0.6]]


# --- LwF, iCaRL --------------------------------------------------------------------------------------

@pytest.mark.parametrize("ce_mode", ["local", "global"])
def test_lwf_loss_is_new_class_cross_entropy_plus_kl_at_temperature_t(ce_mode):
    y = [2, 3, 3]  # LwF trains on new data only
    lwf = learner(LwF, 4, T=2.0, lamb=0.7, ce=ce_mode)
    lwf.net, lwf.teacher = logits_net(tensor(STUDENT)), logits_net(tensor(TEACHER))
    loss, logs = lwf.loss(None, tensor(y), CTX)
    if ce_mode == "local":  # softmax over the new classes' two outputs only, labels shifted by n_old
        ce = cross_entropy([r[2:] for r in STUDENT], [t - 2 for t in y])
    else:
        ce = cross_entropy(STUDENT, y)
    kd = kl_batchmean([r[:2] for r in STUDENT], TEACHER, T=2.0)  # Li & Hoiem: no T² factor
    assert logs["ce"] == pytest.approx(ce, rel=1e-6) and logs["kd"] == pytest.approx(kd, rel=1e-6)
    assert loss.item() == pytest.approx(ce + 0.7 * kd, rel=1e-6)


def test_lwf_first_phase_is_plain_cross_entropy():
    lwf = learner(LwF, 4)
    lwf.net = logits_net(tensor([r[:2] for r in STUDENT]))
    loss, logs = lwf.loss(None, tensor([0, 1, 1]), SimpleNamespace(n_old=0, n_new=2, n_seen=2))
    assert set(logs) == {"ce"} and loss.item() == pytest.approx(cross_entropy([r[:2] for r in STUDENT], [0, 1, 1]), rel=1e-6)


def test_icarl_bce_targets_old_classes_with_the_old_models_sigmoid():
    y = [2, 0, 3]
    icarl = learner(ICaRL, 4)
    icarl.net, icarl.teacher = logits_net(tensor(STUDENT)), logits_net(tensor(TEACHER))
    loss, _ = icarl.loss(None, tensor(y), CTX)
    total = 0.0
    for z, old, label in zip(STUDENT, TEACHER, y):
        targets = [sigmoid(old[0]), sigmoid(old[1])] + [1.0 if label == c else 0.0 for c in (2, 3)]
        total += sum(-(t * math.log(sigmoid(a)) + (1 - t) * math.log(1 - sigmoid(a))) for a, t in zip(z, targets))
    assert loss.item() == pytest.approx(total / (3 * 4), rel=1e-6)  # mean over samples and classes


@pytest.mark.filterwarnings("ignore:reduction")  # the official code's KLDivLoss() element-wise mean, on purpose
def test_icarl_ce_kd_scales_the_kl_by_t_squared_as_the_lucir_and_aanets_code():
    y = [2, 0, 3]
    icarl = learner(ICaRL, 4, loss="ce_kd", T=2.0, beta=0.25)
    icarl.net, icarl.teacher = logits_net(tensor(STUDENT)), logits_net(tensor(TEACHER))
    loss, logs = icarl.loss(None, tensor(y), CTX)
    by_hand = cross_entropy(STUDENT, y) + 0.25 * 4.0 * kl_batchmean([r[:2] for r in STUDENT], TEACHER, T=2.0)
    assert loss.item() == pytest.approx(by_hand, rel=1e-6)
    # the official line: KLDivLoss()(log_softmax(out[:, :n_old]/T), softmax(ref/T)) * T * T * beta * n_old + CE
    s, t, T, n_old = tensor(STUDENT), tensor(TEACHER), 2.0, 2
    official = nn.KLDivLoss()(torch.log_softmax(s[:, :n_old] / T, dim=1), torch.softmax(t / T, dim=1)) * T * T * 0.25 * n_old
    official = official + nn.CrossEntropyLoss()(s, tensor(y))
    assert loss.item() == pytest.approx(float(official), rel=1e-6)


# --- LUCIR -------------------------------------------------------------------------------------------

OLD_W = [[1.0, 0.0], [0.0, 2.0]]  # 2 old classes (norms 1 and 2)
NEW_W = [[-1.0, 0.2], [0.6, 0.8], [0.8, -0.6]]  # 3 new classes


def lucir_with_weights(sigma, **params):
    lucir = learner(LUCIR, 2, **params)
    lucir.net.head.expand(2, tensor(OLD_W))
    lucir.net.head.expand(3, tensor(NEW_W))
    with torch.no_grad():
        lucir.net.head.sigma.fill_(sigma)
    return lucir


def test_cosine_head_is_sigma_times_cosine():
    head = CosineHead(2)
    head.expand(2, tensor(OLD_W))
    head.expand(3, tensor(NEW_W))
    with torch.no_grad():
        head.sigma.fill_(3.5)
    feats = [[0.3, -1.2], [2.0, 0.5]]
    expected = [[3.5 * cos(f, w) for w in OLD_W + NEW_W] for f in feats]
    assert torch.allclose(head(tensor(feats)), tensor(expected), atol=1e-6)


def test_lucir_loss_cross_entropy_adaptive_less_forget_and_margin_ranking_by_hand():
    sigma, lamda_base, K, m, lw_mr = 2.0, 5.0, 2, 0.5, 1.3
    lucir = lucir_with_weights(sigma, lamda_base=lamda_base, K=K, margin=m, lw_mr=lw_mr)
    feats = [[0.9, 0.1], [0.1, 1.0], [0.7, 0.7], [-0.5, 0.4]]
    old_feats = [[1.0, 0.0], [0.4, 1.0], [0.2, 0.9], [-0.5, -0.1]]
    y = [0, 1, 3, 1]  # three old-class samples, one new-class sample (no ranking term for it)
    lucir.teacher = SimpleNamespace(backbone=lambda x: (tensor(old_feats), None))
    ctx = SimpleNamespace(n_old=2, n_new=3, n_seen=5)
    loss, logs = lucir.loss(tensor(feats), tensor(y), ctx)

    weights = OLD_W + NEW_W
    cosines = [[cos(f, w) for w in weights] for f in feats]
    ce = cross_entropy([[sigma * c for c in row] for row in cosines], y)
    lamda = lamda_base * math.sqrt(2 / 3)  # lamda_base * sqrt(n_old / n_new)
    lf = lamda * sum(1 - cos(f, g) for f, g in zip(feats, old_feats)) / len(feats)
    hinges = []
    for row, label in zip(cosines, y):
        if label >= 2:
            continue
        for neg in sorted(row[2:], reverse=True)[:K]:  # the K highest new-class cosines
            hinges.append(max(0.0, m - row[label] + neg))
    mr = lw_mr * sum(hinges) / len(hinges)
    assert 0 < sum(h > 0 for h in hinges) < len(hinges)  # the example has active and inactive hinges
    assert logs["ce"] == pytest.approx(ce, rel=1e-6)
    assert logs["lf"] == pytest.approx(lf, rel=1e-6)
    assert logs["mr"] == pytest.approx(mr, rel=1e-6)
    assert loss.item() == pytest.approx(ce + lf + mr, rel=1e-6)
    # the official less-forget line: CosineEmbeddingLoss()(cur, ref, ones) * lamda
    official_lf = nn.CosineEmbeddingLoss()(tensor(feats), tensor(old_feats), torch.ones(4)) * lamda
    assert logs["lf"] == pytest.approx(float(official_lf), rel=1e-6)


def imprint_context(class_features: dict[int, list[list[float]]]):
    """A phase-1 context whose classes' (already normalised) features are given."""
    feats, owner = [], []
    for c, rows in class_features.items():
        feats += rows
        owner += [c] * len(rows)
    owner = np.array(owner)
    table = torch.nn.functional.normalize(tensor(feats), dim=1)
    ctx = SimpleNamespace(phase=1, new_labels=range(min(class_features), max(class_features) + 1),
                          scenario=SimpleNamespace(class_indices=lambda c: np.flatnonzero(owner == c)),
                          generator=lambda *tags: torch.Generator().manual_seed(0))
    return ctx, (lambda ctx, idx: table[torch.as_tensor(idx)])


def test_lucir_imprints_the_normalised_mean_scaled_to_the_old_weights_mean_norm():
    lucir = learner(LUCIR, 2)
    lucir.net.head.expand(2, tensor(OLD_W))  # norms 1 and 2
    rows = {2: [[3.0, 4.0], [1.0, 0.0], [0.0, 2.0]], 3: [[-1.0, 1.0], [-2.0, 0.5]]}
    ctx, extract = imprint_context(rows)
    lucir.extract = extract
    got = lucir.init_new_weights(ctx)
    for c, g in zip((2, 3), got):
        mean = [sum(col) / len(rows[c]) for col in zip(*(unit(r) for r in rows[c]))]
        assert g.tolist() == pytest.approx([1.5 * a for a in unit(mean)], rel=1e-6)


# --- PODNet ------------------------------------------------------------------------------------------

def test_lsc_softmax_weights_each_classs_proxy_similarities():
    head = LSCHead(2, proxies=2)
    proxies = [[1.0, 0.0], [0.0, 3.0], [-1.0, -1.0], [0.5, -2.0]]  # class 0: rows 0-1, class 1: rows 2-3
    head.expand(2, tensor(proxies))
    with torch.no_grad():
        head.scale.fill_(2.5)
    feats = [[0.3, 0.8], [-2.0, 0.4]]
    expected = []
    for f in feats:
        row = []
        for c in range(2):
            sims = [-sum((a - b) ** 2 for a, b in zip(unit(f), unit(w))) for w in proxies[2 * c : 2 * c + 2]]
            row.append(2.5 * sum(a * s for a, s in zip(softmax(sims), sims)))
        expected.append(row)
    assert torch.allclose(head(tensor(feats)), tensor(expected), atol=1e-6)


def test_podnet_pod_flat_is_one_minus_cosine_times_the_scheduled_factor():
    podnet = learner(PODNet, 2, proxies=2, pod_flat=1.5)
    podnet.net.head.expand(3)
    podnet.net.head.expand(2)
    feats = [[0.9, 0.1], [0.1, 1.0], [-0.7, 0.7]]
    old_feats = [[1.0, 0.0], [0.4, 1.0], [0.2, 0.9]]
    maps = [tensor(feats)[:, :, None, None]]
    podnet.teacher = SimpleNamespace(backbone=lambda x: (tensor(old_feats), maps))
    _, logs = podnet.loss(tensor(feats), tensor([0, 3, 4]), SimpleNamespace(n_old=3, n_new=2, n_seen=5))
    factor = 1.5 * math.sqrt(5 / 2)  # scheduled_factor * sqrt(n_seen / n_new)
    assert logs["pod_flat"] == pytest.approx(factor * sum(1 - cos(f, g) for f, g in zip(feats, old_feats)) / 3, rel=1e-6)


def test_podnet_imprints_kmeans_centres_scaled_to_the_old_proxies_mean_norm():
    podnet = learner(PODNet, 3, proxies=3, kmeans_iterations=20)
    podnet.net.head.expand(1, tensor([[2.0, 0.0, 0.0], [0.0, 4.0, 0.0], [0.0, 0.0, 3.0]]))  # mean norm 3
    g = np.random.default_rng(0)
    directions = np.array([[1.0, 0.2, 0.0], [0.0, 1.0, 0.3], [0.2, 0.0, 1.0]])
    points = np.concatenate([d + 0.02 * g.standard_normal((8, 3)) for d in directions])
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    ctx, extract = imprint_context({1: points.tolist()})
    podnet.extract = extract
    got = podnet.init_new_weights(ctx).numpy()
    reference = KMeans(n_clusters=3, n_init=10, random_state=0).fit(points).cluster_centers_ * 3.0
    assert np.allclose(sorted(got.tolist()), sorted(reference.tolist()), atol=1e-5)
