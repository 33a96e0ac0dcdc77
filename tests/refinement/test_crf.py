"""Dense CRF: a blurred, misplaced mask snaps to the colour edge; PSA's recipe; the pool; a missing extra."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from scarce.errors import ConfigError
from scarce.refinement import RefineContext, build_refiner

pytest.importorskip("pydensecrf.densecrf", reason="the crf extra (pydensecrf2) is part of the dev extra")


def edge_scene():
    """24×24: red on the left, blue from column 12 on (the object); the CAM is a ramp centred at column 9.5."""
    image = torch.zeros(1, 3, 24, 24)
    image[0, 0, :, :12] = 0.9
    image[0, 2, :, 12:] = 0.8
    truth = torch.zeros(24, 24, dtype=torch.bool)
    truth[:, 12:] = True
    columns = torch.arange(24, dtype=torch.float32)
    cam = torch.sigmoid((columns - 9.5) / 2.0).expand(24, 24).clone()
    return image, cam[None], truth


def iou(pred: torch.Tensor, truth: torch.Tensor) -> float:
    return float((pred & truth).sum()) / float((pred | truth).sum())


def test_crf_snaps_a_blurred_mask_to_the_colour_edge():
    image, cams, truth = edge_scene()
    refiner = build_refiner("crf").__class__({"workers": 1})
    refiner.prepare(RefineContext(model=None, datasets=None, cam_dir=None, work_dir=None, threshold=0.5))
    before = cams[0] > 0.5  # columns 10..23 are foreground
    assert iou(before, truth) == pytest.approx(12 / 14)
    refined = refiner(image, [cams], [[1]])[0]
    assert refined.shape == cams.shape and 0.0 <= float(refined.min()) and float(refined.max()) <= 1.0
    after = refined[0] > 1.0 - refined[0]  # foreground marginal above the background's
    assert iou(after, truth) == 1.0


def test_power_background_is_psa_crf_inference():
    """PSA's _crf_with_alpha written out with pydensecrf: bg = (1 - max)^α, soft unary, 3/3 and 80/13/10."""
    import pydensecrf.densecrf as dcrf
    from pydensecrf.utils import unary_from_softmax

    gen = torch.Generator().manual_seed(2)
    image = torch.rand(1, 3, 10, 12, generator=gen)
    cams = torch.rand(2, 10, 12, generator=gen)
    refiner = build_refiner("crf").__class__({"background": "power", "alpha": 4, "workers": 1})
    got = refiner(image, [cams], [[0, 3]])[0]

    v = cams.numpy()
    probs = np.concatenate([(1 - v.max(axis=0, keepdims=True)) ** 4, v]).astype(np.float32)
    rgb = np.ascontiguousarray((image[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
    d = dcrf.DenseCRF2D(12, 10, 3)
    d.setUnaryEnergy(np.ascontiguousarray(unary_from_softmax(probs)))
    d.addPairwiseGaussian(sxy=3, compat=3)
    d.addPairwiseBilateral(sxy=80, srgb=13, rgbim=rgb, compat=10)
    expected = np.array(d.inference(10)).reshape(3, 10, 12)[1:]
    assert np.allclose(got.numpy(), expected, atol=1e-6)


def test_two_workers_give_the_same_maps():
    gen = torch.Generator().manual_seed(3)
    images = torch.rand(3, 3, 16, 16, generator=gen)
    cams = [torch.rand(k, 16, 16, generator=gen) for k in (1, 2, 1)]
    keys = [[0], [1, 2], [4]]
    inline = build_refiner("crf").__class__({"workers": 1, "threshold": 0.4})(images, cams, keys)
    pooled = build_refiner("crf").__class__({"workers": 2, "threshold": 0.4})
    try:
        out = pooled(images, cams, keys)
    finally:
        pooled.close()
    assert all(torch.equal(a, b) for a, b in zip(inline, out))


def test_crf_errors_name_the_fix(monkeypatch):
    refiner = build_refiner("crf")
    with pytest.raises(ConfigError, match="threshold"):
        refiner(torch.rand(1, 3, 4, 4), [torch.rand(1, 4, 4)], [[0]])
    monkeypatch.setitem(sys.modules, "pydensecrf.densecrf", None)  # as if the extra were not installed
    with pytest.raises(ConfigError, match=r"scarce\[crf\]"):
        build_refiner("crf")
