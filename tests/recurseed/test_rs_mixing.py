"""EdgePredictMix: EP on hand-made probability maps, the foreground union, and the mixing identities."""

from __future__ import annotations

from collections import deque

import numpy as np
import pytest
import torch
from skimage.feature import canny

from scarce.singlestage.mixing import (classmix_masks, cutmix_boxes, edge_predict, foreground_union, mix, partners,
                                       restricted_softmax)


def bands(left: tuple[float, float], right: tuple[float, float], width: int = 12) -> np.ndarray:
    """(2, width, width) [bg, class] probabilities: one value pair on the left half, another on the right."""
    p = np.zeros((2, width, width))
    p[:, :, : width // 2] = np.array(left)[:, None, None]
    p[:, :, width // 2:] = np.array(right)[:, None, None]
    return p


def test_an_edge_splits_two_regions_of_the_same_class_into_two_superpixels():
    # class 1 dominates both halves (0.9 and 0.55); without the edge one superpixel would average them (≈ 0.72)
    p = bands((0.1, 0.9), (0.45, 0.55))
    out = edge_predict(p, sigma=1.0, low=0.1, high=0.2)
    expected = np.zeros_like(p, dtype=np.float32)
    expected[1, :, :6], expected[1, :, 6:] = 0.9, 0.55  # each half keeps its own mean; background planes 0
    assert np.allclose(out, expected)
    assert ((out[1] > 0.6) == (np.arange(12) < 6)[None, :]).all()  # δ_fg 0.6 keeps the left half only


def components(free: np.ndarray) -> np.ndarray:
    """4-connected components by breadth-first search (independent of scipy): 0 where not free."""
    labels = np.zeros(free.shape, dtype=int)
    count = 0
    for start in zip(*np.nonzero(free)):
        if labels[start]:
            continue
        count += 1
        labels[start] = count
        queue = deque([start])
        while queue:
            y, x = queue.popleft()
            for ny, nx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
                if 0 <= ny < free.shape[0] and 0 <= nx < free.shape[1] and free[ny, nx] and not labels[ny, nx]:
                    labels[ny, nx] = count
                    queue.append((ny, nx))
    return labels


def test_every_superpixel_takes_its_dominant_class():
    p = np.zeros((3, 12, 12))
    p[:, :, :6] = np.array([0.1, 0.6, 0.3])[:, None, None]  # left: class 1
    p[:, 3:5, 2:4] = np.array([0.02, 0.48, 0.50])[:, None, None]  # a faint blob whose own argmax is class 2
    p[:, :, 6:] = np.array([0.8, 0.1, 0.1])[:, None, None]  # right: background
    out = edge_predict(p, sigma=1.0, low=0.2, high=0.3)
    edges = np.zeros((12, 12), dtype=bool)
    for plane in p:
        edges |= canny(np.pad(plane, 1, mode="edge"), sigma=1.0, low_threshold=0.2, high_threshold=0.3,
                       mode="nearest")[1:-1, 1:-1]
    assert edges[:, 5:7].all() and not edges[:, :4].any() and not edges[:, 8:].any()  # the boundary only
    regions = components(~edges)
    left, right = regions[0, 0], regions[0, 11]
    assert left != right
    left_mean = p[1][regions == left].mean()  # 0.6 but for the blob's four 0.48
    assert left_mean == pytest.approx((0.6 * ((regions == left).sum() - 4) + 0.48 * 4) / (regions == left).sum())
    assert np.allclose(out[1][regions == left], left_mean) and not out[2].any()  # the blob follows class 1
    assert np.allclose(out[0][regions == right], 0.8)
    for y, x in zip(*np.nonzero(edges)):  # an edge pixel is its own superpixel: its own argmax and value
        assert out[:, y, x].argmax() == p[:, y, x].argmax() and out[:, y, x].max() == pytest.approx(p[:, y, x].max())


def test_foreground_union_is_any_class_above_the_threshold():
    maps = torch.tensor([[[[0.7, 0.2], [0.1, 0.55]], [[0.1, 0.6], [0.5, 0.56]]]])  # (1, 2 classes, 2, 2)
    assert torch.equal(foreground_union(maps, 0.55), torch.tensor([[[1.0, 1.0], [0.0, 1.0]]]))


def test_mixing_identities_and_labels_follow():
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(3, 3, 4, 5, generator=gen)
    labels = torch.randint(0, 4, (3, 4, 5), generator=gen)
    labels[0, 0, 0] = 255
    pair = torch.tensor([2, 0, 1])
    ones, zeros = torch.ones(3, 4, 5), torch.zeros(3, 4, 5)
    assert torch.equal(mix(images, ones, pair), images) and torch.equal(mix(labels, ones, pair), labels)
    assert torch.equal(mix(images, zeros, pair), images[pair]) and torch.equal(mix(labels, zeros, pair), labels[pair])
    half = torch.zeros(3, 4, 5)
    half[:, :, :2] = 1.0  # the first two columns from image i, the rest from its partner
    mixed_images, mixed_labels = mix(images, half, pair), mix(labels, half, pair)
    for i, j in enumerate(pair.tolist()):
        for y in range(4):
            for x in range(5):
                source = i if x < 2 else j
                assert torch.equal(mixed_images[i, :, y, x], images[source, :, y, x])
                assert mixed_labels[i, y, x] == labels[source, y, x]
    assert mixed_labels.dtype == labels.dtype and mixed_labels[0, 0, 0] == 255  # the ignore label travels too


def test_partners_are_never_the_image_itself_and_cover_the_others():
    gen = torch.Generator().manual_seed(0)
    draws = torch.stack([partners(4, gen) for _ in range(400)])
    assert not (draws == torch.arange(4)).any()
    counts = torch.stack([(draws == j).sum(dim=0) for j in range(4)])  # counts[j, i]: how often i drew j
    assert ((counts > 100) | (torch.eye(4, dtype=torch.bool))).all()  # each of the 3 others ≈ 133 of 400 times
    with pytest.raises(ValueError):
        partners(1)


def test_cutmix_boxes_and_classmix_masks():
    boxes = cutmix_boxes(64, 16, 16, torch.Generator().manual_seed(0))
    assert set(boxes.unique().tolist()) <= {0.0, 1.0}
    for box in boxes:  # one axis-aligned rectangle (or nothing)
        rows, cols = box.any(dim=1), box.any(dim=0)
        assert int(box.sum()) == int(rows.sum()) * int(cols.sum())
    assert 0.25 < float(boxes.mean()) < 0.45  # E[1 − λ] = 0.5 before clipping at the borders
    labels = torch.tensor([[[0, 1, 1], [2, 2, 3], [3, 0, 255]]])
    mask = classmix_masks(labels, torch.Generator().manual_seed(0))[0]
    chosen = sorted({int(c) for c in labels[0][mask > 0].tolist()})
    assert len(chosen) == 2 and set(chosen) <= {1, 2, 3}  # ⌈3/2⌉ of the foreground classes, whole
    assert torch.equal(mask > 0, torch.isin(labels[0], torch.tensor(chosen)))


def test_restricted_softmax_is_over_background_and_the_image_classes():
    logits = torch.tensor([1.0, 2.0, 3.0, 0.5]).view(1, 4, 1, 1)
    probs = restricted_softmax(logits, [[1]])[:, :, 0, 0]  # classes 0..2 → planes 1..3; keep bg and class 1 (plane 2)
    e1, e3 = float(np.exp(1.0)), float(np.exp(3.0))
    assert torch.allclose(probs, torch.tensor([[e1 / (e1 + e3), 0.0, e3 / (e1 + e3), 0.0]]))
