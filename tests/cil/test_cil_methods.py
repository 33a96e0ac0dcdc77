import pytest
import torch
import torch.nn.functional as F

from scarce.cil import METHODS, run
from scarce.cil.methods import nme_scores
from scarce.cil.methods.base import kd_loss
from scarce.cil.methods.podnet import kmeans, nca_loss, pod_spatial_loss
from scarce.cil.models import ConvNet, CosineHead, LSCHead, LinearHead, build_backbone

from cil_helpers import tiny_config


def test_nme_classifies_by_nearest_normalised_class_mean():
    means = F.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]]), dim=1)
    feats = torch.tensor([[5.0, 0.5], [0.2, 3.0], [-2.0, -1.5], [0.1, -4.0], [3.0, 3.1]])
    # 4th: direction (0.02, -1) is closer to (-0.71, -0.71) than to (1, 0); 5th: (0.69, 0.72) → class 1
    assert nme_scores(feats, means).argmax(1).tolist() == [0, 1, 2, 2, 1]
    expected = -((F.normalize(feats, dim=1)[:, None, :] - means[None]) ** 2).sum(-1)
    assert torch.allclose(nme_scores(feats, means), expected, atol=1e-6)


def test_distillation_losses_vanish_when_teacher_equals_student():
    z = torch.randn(5, 4)
    assert kd_loss(z, z, 2.0, t_squared=True).abs() < 1e-6
    maps = [torch.randn(3, 4, 6, 6), torch.randn(3, 8, 3, 3)]
    assert pod_spatial_loss(maps, maps).abs() < 1e-6
    assert pod_spatial_loss(maps, [m * 2 for m in maps]).abs() < 1e-5  # normalised: scale-invariant
    assert pod_spatial_loss(maps, [m.flip(-1) for m in maps]) > 0


def test_nca_loss_matches_the_formula():
    sim = torch.tensor([[0.9, 0.1, -0.2], [0.0, 0.5, 0.4]])
    y = torch.tensor([0, 2])
    scale, margin = torch.tensor(3.0), 0.6
    rows = []
    for s, t in zip(sim, y):
        pos = scale * (s[t] - margin)
        neg = torch.logsumexp(torch.stack([scale * s[j] for j in range(3) if j != t]), 0)
        rows.append(torch.clamp(neg - pos, min=0))
    assert torch.allclose(nca_loss(sim, y, scale, margin), torch.stack(rows).mean())


def test_heads_grow_by_blocks_and_resize_for_loading():
    for head in (LinearHead(6), CosineHead(6), LSCHead(6, proxies=3)):
        head.expand(2)
        head.expand(3)
        assert head.n_classes == 5 and head(torch.randn(4, 6)).shape == (4, 5)
        other = type(head)(6) if not isinstance(head, LSCHead) else LSCHead(6, proxies=3)
        other.resize(head.block_sizes)
        other.load_state_dict(head.state_dict())
        assert torch.equal(other(torch.ones(1, 6)), head(torch.ones(1, 6)))


def test_lsc_scale_cannot_flip_the_logits():
    head = LSCHead(4, proxies=2)
    head.expand(3)
    f = torch.randn(5, 4)
    with torch.no_grad():
        head.scale.fill_(-3.0)
    assert torch.allclose(head(f), head.similarity(f))  # the scale is used as max(scale, 1)
    assert head.similarity(f).max() <= 0 and head.similarity(f).min() >= -4


def test_backbones():
    f, maps = build_backbone("resnet32", 3, 32)(torch.randn(2, 3, 32, 32))
    assert f.shape == (2, 64) and len(maps) == 3 and maps[-1].shape[-1] == 8
    f, maps = build_backbone("auto", 3, 40)(torch.randn(1, 3, 40, 40))
    assert f.shape == (1, 512) and len(maps) == 4
    net = ConvNet(1, last_relu=False)
    assert (net(torch.randn(4, 1, 28, 28))[1][-1] < 0).any()
    assert (ConvNet(1)(torch.randn(4, 1, 28, 28))[1][-1] >= 0).all()


def test_kmeans_finds_separated_clusters():
    g = torch.Generator().manual_seed(0)
    pts = torch.cat([torch.randn(20, 2, generator=g) * 0.05 + c for c in (torch.tensor([3.0, 0]), torch.tensor([-3.0, 0]))])
    centres = kmeans(pts, 2, 10, torch.Generator().manual_seed(1))
    assert sorted(round(float(c[0])) for c in centres) == [-3, 3]


@pytest.mark.parametrize("method", sorted(m for m in METHODS if not m.endswith("_placebo")))  # those: test_cil_placebo
def test_every_method_runs_the_tiny_protocol(method, tmp_path):
    extra = {"lucir": ["method.balanced_finetune=true", "method.balanced_finetune_epochs=2"],
             "podnet": ["method.balanced_finetune_epochs=2"]}.get(method, [])
    result = run(tiny_config(method, *extra), tmp_path, progress=False)
    heads = set(result.matrices)
    with_memory = method in ("icarl", "lucir", "podnet", "lucir_aanets", "podnet_aanets", "mnemonics")
    assert heads == ({"cnn", "nme"} if with_memory else {"cnn"})
    for m in result.matrices.values():
        assert [len(r) for r in m.per_task] == [1, 2, 3]
        assert all(0 <= a <= 100 for r in m.per_task for a in r)
    counts = result.metrics["memory_per_class"]
    if with_memory:
        assert counts == {str(c): 5 for c in range(6)}
    else:
        assert counts == {}


def test_lucir_freezes_old_class_weights_during_an_incremental_phase(tmp_path):
    from scarce.cil.trainer import Trainer

    snapshots = {}

    def grab(trainer, phase, epoch, step):
        if phase == 1:
            blocks = trainer.learner.net.head.blocks
            snapshots.setdefault("old_first", blocks[0].detach().clone())
            snapshots.setdefault("new_first", blocks[1].detach().clone())
            snapshots["old_last"] = blocks[0].detach().clone()
            snapshots["new_last"] = blocks[1].detach().clone()

    # phase 1: 60 new images + 10 exemplars in batches of 16 = 5 steps
    cfg = tiny_config("lucir", "protocol.n_phases=1", "protocol.class_order=[0,1,2,3]")
    Trainer(cfg, tmp_path, progress=False, callbacks=[grab]).run()
    assert torch.equal(snapshots["old_first"], snapshots["old_last"])  # frozen
    assert not torch.equal(snapshots["new_first"], snapshots["new_last"])  # trained in the same steps


def final_state(run_dir):
    return torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["learner"]["net"]


@pytest.mark.parametrize("cbf", [False, True])
def test_lucir_class_balanced_finetuning_is_opt_in_and_trains_only_the_class_weights(cbf, tmp_path):
    from scarce.cil.trainer import Trainer

    last_step = {}

    def grab(trainer, phase, epoch, step):
        if phase == 1:
            last_step.update({k: v.detach().clone() for k, v in trainer.learner.net.state_dict().items()})

    extra = ("method.balanced_finetune=true", "method.balanced_finetune_epochs=3") if cbf else ()
    cfg = tiny_config("lucir", "protocol.n_phases=1", "protocol.class_order=[0,1,2,3]", *extra)
    Trainer(cfg, tmp_path, progress=False, callbacks=[grab]).run()
    final = final_state(tmp_path)
    changed = {k for k in final if not torch.equal(final[k], last_step[k])}
    # LUCIR's cbf script (--ft_flag 2): old and new class weights train; backbone, batch norm and sigma do not
    assert changed == ({"head.blocks.0", "head.blocks.1"} if cbf else set())
