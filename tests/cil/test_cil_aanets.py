import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from scarce.cil import run
from scarce.cil.memory import Memory, MemorySpec
from scarce.cil.methods.aanets import AANetsBackbone, AANetsMixin, ScaledConv2d
from scarce.cil.models import ConvNet, ResNet

from cil_helpers import tiny_config


def perturbed_aanets(backbone: torch.nn.Module) -> AANetsBackbone:
    """Two branches that compute different things: random stable scales, random plastic kernels."""
    g = torch.Generator().manual_seed(0)
    net = AANetsBackbone.from_backbone(backbone)
    with torch.no_grad():
        for p in net.stable.parameters():
            p.copy_(torch.rand(p.shape, generator=g) + 0.5)
        for p in net.plastic.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.3)
    return net.eval()


def plain_resnet_forward(net: ResNet, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The ResNet written out (stem, then each stage), independent of the level decomposition."""
    x = net.stem(x)
    maps = []
    for stage in net.stages:
        x = stage(x)
        maps.append(x)
    return x.mean(dim=(2, 3)), maps


@pytest.mark.parametrize("weights, branch", [((1.0, 0.0), "stable"), ((0.0, 1.0), "plastic")])
def test_aggregation_weights_one_zero_give_exactly_one_branch(weights, branch):
    net = perturbed_aanets(ResNet((1, 1), (4, 8), in_channels=3, last_relu=False))
    x = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        net.aggregation.fill_(weights[0])  # level output = a * stable + (1 - a) * plastic
        feats, maps = net(x)
        ref_feats, ref_maps = plain_resnet_forward(getattr(net, branch), x)
        other_feats, _ = plain_resnet_forward(net.plastic if branch == "stable" else net.stable, x)
    assert torch.allclose(feats, ref_feats, atol=1e-6) and len(maps) == 2
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(maps, ref_maps))
    assert not torch.allclose(feats, other_feats, atol=1e-3)  # the branches really differ


def test_a_mixed_level_aggregates_the_two_blocks_on_the_previous_aggregate():
    net = perturbed_aanets(ConvNet(1, widths=(4, 6)))
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        net.aggregation.copy_(torch.tensor([0.3, 0.8]))
        feats, maps = net(x)
        level1 = 0.3 * net.stable.stages[0](x) + 0.7 * net.plastic.stages[0](x)
        pooled = F.max_pool2d(level1, 2)
        level2 = 0.8 * net.stable.stages[1](pooled) + 0.2 * net.plastic.stages[1](pooled)
    assert torch.allclose(maps[0], level1, atol=1e-6) and torch.allclose(maps[1], level2, atol=1e-6)
    assert torch.allclose(feats, level2.mean(dim=(2, 3)), atol=1e-6)


def test_scaled_conv_is_the_frozen_kernel_times_a_scale_per_channel_pair():
    conv = torch.nn.Conv2d(2, 3, 3, padding=1, bias=False)
    scaled = ScaledConv2d(conv)
    assert [n for n, _ in scaled.named_parameters()] == ["scale"] and scaled.scale.shape == (3, 2, 1, 1)
    with torch.no_grad():
        scaled.scale.copy_(torch.arange(6.0).view(3, 2, 1, 1))
    x = torch.randn(1, 2, 5, 5, generator=torch.Generator().manual_seed(3))
    # by hand: output channel o sums, over input channels i, scale[o, i] * (kernel[o, i] * x[i])
    expected = torch.zeros(1, 3, 5, 5)
    for o in range(3):
        for i in range(2):
            kernel = conv.weight[o : o + 1, i : i + 1]
            expected[0, o] += float(scaled.scale[o, i].detach()) * F.conv2d(x[:, i : i + 1], kernel, padding=1)[0, 0]
    assert torch.allclose(scaled(x), expected, atol=1e-5)


def test_base_network_is_preserved_at_conversion():
    base = ConvNet(1, widths=(4, 6)).eval()
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        assert torch.equal(AANetsBackbone.from_backbone(base).eval()(x)[0], base(x)[0])


SMALL = ("data.train_per_class=12", "data.test_per_class=4")


@pytest.mark.parametrize("method, aggregation_lr", [("lucir_aanets", 0.01), ("podnet_aanets", 0.0)])
def test_stable_kernels_stay_at_their_base_values_through_the_incremental_phases(method, aggregation_lr, tmp_path):
    run(tiny_config(method, f"method.aggregation_lr={aggregation_lr}", *SMALL), tmp_path, progress=False)
    base = torch.load(tmp_path / "checkpoints" / "phase_0.pt", weights_only=True)["learner"]["net"]
    last = torch.load(tmp_path / "checkpoints" / "phase_2.pt", weights_only=True)["learner"]
    net = last["net"]
    assert last["aanets"]
    kernels = [k for k in base if k.startswith("backbone.stages.") and k.endswith(".0.weight")]
    assert len(kernels) == 3
    for k in kernels:
        stable = k.replace("backbone.", "backbone.stable.")
        scale = net[stable.replace(".weight", ".scale")]
        assert torch.equal(net[stable], base[k])  # frozen
        assert not torch.equal(net[k.replace("backbone.", "backbone.plastic.")], base[k])  # trained
        assert not torch.equal(scale, torch.ones_like(scale))  # trained
    # the aggregation weights move only through their own balanced-set step: at rate 0 the model's
    # optimiser leaves them at 0.5
    agg = net["backbone.aggregation"]
    assert agg.shape == (3,) and torch.equal(agg, torch.full((3,), 0.5)) == (aggregation_lr == 0)
    # the run reports each incremental phase's weights: the same numbers as that phase's checkpoint
    report = json.loads((tmp_path / "metrics.json").read_text())["method_report"]["aanets"]["aggregation"]
    assert [r["phase"] for r in report] == [1, 2]
    for r in report:
        saved = torch.load(tmp_path / "checkpoints" / f"phase_{r['phase']}.pt", weights_only=True)["learner"]["net"]
        assert r["weights"] == saved["backbone.aggregation"].tolist()


def test_the_balanced_set_takes_as_many_images_per_class_as_the_smallest_old_class(tmp_path):
    memory = Memory(MemorySpec(mode="per_class", size=5))
    memory.exemplars = {0: np.array([1, 2, 3, 4]), 1: np.array([5, 6, 7])}  # unequal, as RMM leaves them
    ctx = SimpleNamespace(memory=memory, n_new=2, n_seen=4, phase=1,
                          scenario=SimpleNamespace(train_indices=lambda phase: np.arange(100, 110)),
                          generator=lambda *key: torch.Generator().manual_seed(0))
    idx = AANetsMixin.balanced_indices(None, ctx)
    # by hand: k = 3 (class 1), so 3 × 2 new-class draws from 100..109, then classes 0 and 1 cut to 3 each
    assert len(idx) == 6 + 6 and idx[6:].tolist() == [1, 2, 3, 5, 6, 7]
    assert all(100 <= i < 110 for i in idx[:6])
