"""SCG against its explicit formula written out densely (the full HW × HW matrices, S² as S·S)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from scarce.errors import ConfigError
from scarce.models.classifier import CamClassifier
from scarce.models.pooling import build_pooling
from scarce.refinement import RefineContext, build_refiner
from scarce.refinement.scg import self_correlation_map


def dense_scg(features, cams, fg, bg, t1, t2):
    """RecurSeed's Algorithm 1 with every matrix formed: HSC = mean_l max(SC¹_l, SC²_l), rows averaged per region."""
    k, h, w = cams.shape
    n = h * w
    hsc = torch.zeros(n, n, dtype=torch.float64)
    for level in features:
        f = level.double().reshape(level.shape[0], n).T
        cos = (f @ f.T) / ((f.norm(dim=1)[:, None] + 1e-10) * (f.norm(dim=1)[None, :] + 1e-10))
        sc1 = torch.where(cos.clamp_min(0) >= t1, cos.clamp_min(0), torch.zeros(()))
        s2 = cos @ cos / n
        low, high = s2.min(dim=1, keepdim=True).values, s2.max(dim=1, keepdim=True).values
        sc2 = (s2 - low) / (high - low + 1e-10)
        sc2 = torch.where(sc2 >= t2, sc2, torch.zeros(()))
        hsc += torch.maximum(sc1, sc2) / len(features)
    out = []
    for cam in cams.double().reshape(k, n):
        obj = hsc[cam > fg].mean(dim=0) if (cam > fg).any() else torch.zeros(n, dtype=torch.float64)
        back = hsc[cam < bg].mean(dim=0) if (cam < bg).any() else torch.zeros(n, dtype=torch.float64)
        m = (obj - back).clamp_min(0)
        out.append((m - m.min()) / (m.max() - m.min() + 1e-10))
    return torch.stack(out).reshape(k, h, w)


@pytest.fixture
def maps():
    gen = torch.Generator().manual_seed(1)
    features = [torch.randn(5, 4, 5, generator=gen), torch.rand(3, 4, 5, generator=gen)]
    features[0][:, :2, :] += 2.0  # a block of similar features, so the thresholds matter
    cams = torch.rand(2, 4, 5, generator=gen)
    cams[1] *= 0.2  # few pixels above δ_h
    return features, cams


@pytest.mark.parametrize("thresholds", [(0.30, 0.05, 0.50, 0.10), (0.30, 0.05, 0.0, 0.0), (0.6, 0.2, 0.2, 0.4)])
def test_scg_equals_dense_formula(maps, thresholds):
    features, cams = maps
    got = self_correlation_map(features, cams, *thresholds)
    assert torch.allclose(got.double(), dense_scg(features, cams, *thresholds), atol=1e-5)


@pytest.mark.parametrize("chunk", [1, 3, 7])
def test_chunk_size_does_not_change_the_output(maps, chunk):
    features, cams = maps
    whole = self_correlation_map(features, cams, chunk=20)
    assert torch.allclose(self_correlation_map(features, cams, chunk=chunk), whole, atol=1e-6)


class TinyBackbone(nn.Sequential):
    """Three strided convs with timm's ``feature_info``, so the test can recompute the levels itself."""

    def __init__(self) -> None:
        super().__init__(nn.Sequential(nn.Conv2d(3, 4, 3, 2, 1), nn.ReLU()),
                         nn.Sequential(nn.Conv2d(4, 6, 3, 2, 1), nn.ReLU()),
                         nn.Sequential(nn.Conv2d(6, 5, 3, 2, 1), nn.ReLU()))
        self.feature_info = [{"module": str(i), "reduction": 2 ** (i + 1)} for i in range(3)]


def test_refiner_reads_the_classifier_levels():
    torch.manual_seed(0)
    mean_std = ((0.5, 0.4, 0.3), (0.2, 0.25, 0.3))
    model = CamClassifier(TinyBackbone(), 5, 3, build_pooling("gap", 0.05), mean_std).eval()
    images = torch.rand(2, 3, 32, 32)
    cams = [torch.rand(2, 32, 32), torch.rand(1, 32, 32)]
    refiner = build_refiner("scg")
    refiner.prepare(RefineContext(model=model, datasets=None, cam_dir=None, work_dir=None))
    out = refiner(images, cams, [[0, 2], [1]])

    normalised = (images - torch.tensor(mean_std[0]).view(1, 3, 1, 1)) / torch.tensor(mean_std[1]).view(1, 3, 1, 1)
    levels, x = [], normalised
    with torch.no_grad():
        for stage in model.backbone:
            x = stage(x)
            levels.append(F.interpolate(x, size=(4, 4), mode="nearest"))
    for i, (cam, got) in enumerate(zip(cams, out)):
        small = F.interpolate(cam[None], size=(4, 4), mode="bilinear", align_corners=False)[0]
        expected = dense_scg([level[i] for level in levels], small, 0.30, 0.05, 0.50, 0.10)
        expected = F.interpolate(expected[None].float(), size=(32, 32), mode="bilinear", align_corners=False)[0]
        assert got.shape == cam.shape
        assert torch.allclose(got, expected, atol=1e-5)


def test_scg_errors_name_the_problem():
    with pytest.raises(ConfigError, match="background < foreground"):
        build_refiner("scg").__class__({"foreground": 0.1, "background": 0.2})
    with pytest.raises(ConfigError, match="prepare"):
        build_refiner("scg")(torch.rand(1, 3, 8, 8), [torch.rand(1, 8, 8)], [[0]])
    model = CamClassifier(TinyBackbone(), 5, 3, build_pooling("gap", 0.05), ((0, 0, 0), (1, 1, 1)))
    with pytest.raises(ConfigError, match="levels"):
        build_refiner("scg").__class__({"levels": [5]}).prepare(
            RefineContext(model=model, datasets=None, cam_dir=None, work_dir=None))
