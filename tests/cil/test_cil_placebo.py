"""PlaceboCIL: the evaluation function and the selection (hand cases), Exp3 (hand case, toy bandit), the free
stream (folder fixture, held-out classes, scikit-image), no placebo outliving its batch, bad input."""

import math
import os
import random

import numpy as np
import pytest
import torch
from PIL import Image

from scarce.cil import run
from scarce.cil.data import load_fashion_mnist_cil
from scarce.cil.freestream import FreeStreamConfig, build_free_stream
import scarce.cil.methods.placebo as placebo_module
from scarce.cil.methods.placebo import Exp3, evaluation_scores, select_placebos, target_distances
from scarce.cil.protocol import Protocol
from scarce.cil.trainer import Trainer
from scarce.errors import ConfigError, DataError

from cil_helpers import tiny_config

R = 1 / math.sqrt(2)
# Prototypes: old classes 0 and 1 at 0° and 90°, new class 2 at 180°. Candidates at 0°, 90°, 45°, 180° and
# (0.8, 0.6). Cosine distances (1 − cos) to the prototypes, by hand:
PROTOTYPES = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
CANDIDATES = torch.tensor([[1.0, 0.0], [0.0, 1.0], [R, R], [-1.0, 0.0], [0.8, 0.6]])
DIST = [[0, 1, 2], [1, 0, 1], [1 - R, 1 - R, 1 + R], [2, 1, 0], [0.2, 0.4, 1.8]]


def test_evaluation_function_by_hand():
    # w_old = 0, w_new = −1 (close to the target class, far from the new class), old classes as targets
    got = evaluation_scores(CANDIDATES, PROTOTYPES, 2, range(2), 0.0, -1.0)
    want = [[d[0] - d[2], d[1] - d[2]] for d in DIST]
    assert torch.allclose(got, torch.tensor(want), atol=1e-6)
    # the released rule: w_old = w_new = 1, every seen class a target
    got = evaluation_scores(CANDIDATES, PROTOTYPES, 2, range(3), 1.0, 1.0)
    want = [[d[k] + (d[0] + d[1]) / 2 + d[2] for k in range(3)] for d in DIST]
    assert torch.allclose(got, torch.tensor(want), atol=1e-6)


def test_selection_returns_the_best_candidates_under_the_evaluation_function():
    # (0, −1): class 0 takes the 0° candidate (−2), class 1 the 45° one (−1.414 < −1.4 of (0.8, 0.6)),
    # class 0 again the (0.8, 0.6) one (−1.6): rows 0, 2, 4 — the 90° and 180° ones are bad placebos.
    scores = evaluation_scores(CANDIDATES, PROTOTYPES, 2, range(2), 0.0, -1.0)
    assert select_placebos(scores, 3).tolist() == [0, 2, 4]
    assert select_placebos(scores, 1, start=1).tolist() == [2]  # class 1 first
    # released (1, 1) over 3 classes: class 0 → 45° (2.293 < 2.3), class 1 → 90° (1.5), class 2 → 180° (1.5)
    scores = evaluation_scores(CANDIDATES, PROTOTYPES, 2, range(3), 1.0, 1.0)
    assert select_placebos(scores, 3).tolist() == [2, 1, 3]
    # a row is never chosen twice, and the rows index the candidate batch (the released index drift cannot occur)
    assert sorted(select_placebos(scores, 5).tolist()) == [0, 1, 2, 3, 4]


def test_target_distances_follow_the_turn_that_chose_each_placebo():
    features = torch.tensor([[2.0, 0.0], [0.0, 3.0], [1.0, 1.0]])
    prototypes = torch.tensor([[1.0, 0.0], [0.0, 5.0]])
    # turns from class 1: row 1 for class 1 (same direction: 0), row 0 for class 0 (0), row 2 for class 1 (45°)
    d = target_distances(features, prototypes, torch.tensor([1, 0, 2]), range(2), start=1)
    assert torch.allclose(d, torch.tensor([0.0, 0.0, 1 - 0.5 ** 0.5]), atol=1e-7)
    # from class 0: row 1 for class 0 (90°: 1), row 0 for class 1 (1), row 2 for class 0 (45°)
    d = target_distances(features, prototypes, torch.tensor([1, 0, 2]), range(2), start=0)
    assert torch.allclose(d, torch.tensor([1.0, 1.0, 1 - 0.5 ** 0.5]), atol=1e-7)


def test_exp3_update_by_hand():
    bandit = Exp3(3, gamma=0.3)
    assert torch.allclose(bandit.probabilities(), torch.full((3,), 1 / 3, dtype=torch.float64))
    bandit.update(1, 0.6)  # p = 1/3: estimated reward 1.8, w_1 = exp(0.3 · 1.8 / 3) = exp(0.18)
    w = [1.0, math.exp(0.18), 1.0]
    p = [0.7 * v / sum(w) + 0.1 for v in w]
    assert bandit.probabilities().tolist() == pytest.approx(p, rel=1e-12)
    bandit.update(0, 1.0)  # w_0 = exp(0.3 · (1 / p_0) / 3)
    w[0] = math.exp(0.1 / p[0])
    assert bandit.probabilities().tolist() == pytest.approx([0.7 * v / sum(w) + 0.1 for v in w], rel=1e-12)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        bandit.update(0, 1.5)


def test_exp3_finds_the_best_arm_of_a_toy_bandit():
    rng = random.Random(0)
    bandit, gen = Exp3(3, gamma=0.1), torch.Generator().manual_seed(0)
    means = [0.2, 0.8, 0.5]
    for _ in range(600):
        arm = bandit.draw(gen)
        bandit.update(arm, float(rng.random() < means[arm]))
    p = bandit.probabilities()
    assert int(p.argmax()) == 1 and p[1] > 0.8


# --- the free stream -----------------------------------------------------------------------------------

def quadrants(path, colours, side=64):
    """A side×side RGB image whose four quadrants have the given colours (top-left, top-right, bottom-left,
    bottom-right)."""
    a = np.zeros((side, side, 3), np.uint8)
    h = side // 2
    for (r, c), colour in zip([(0, 0), (0, 1), (1, 0), (1, 1)], colours):
        a[r * h : (r + 1) * h, c * h : (c + 1) * h] = colour
    Image.fromarray(a).save(path)


@pytest.fixture
def folder(tmp_path):
    """An ImageNet-like stream: two classes (wnids with readable names), two 64×64 images each."""
    root = tmp_path / "stream"
    for wnid, colours in (("n001", [(10, 10, 10), (20, 20, 20), (30, 30, 30), (40, 40, 40)]),
                          ("n002", [(200, 0, 0), (0, 200, 0), (0, 0, 200), (90, 90, 90)])):
        (root / wnid).mkdir(parents=True)
        quadrants(root / wnid / "a.png", colours)
        quadrants(root / wnid / "b.png", colours[::-1])
    (root / "classes.txt").write_text("n001 volcano\nn002 tench\n")
    return root


def fmnist(n_protocol=6):
    data = load_fashion_mnist_cil(subset=True)
    protocol = Protocol.build(data.n_classes, class_order=list(range(n_protocol)), n_base=2,
                              n_phases=n_protocol // 2 - 1, class_names=data.class_names)
    return data, protocol


def test_folder_stream_cuts_each_image_into_tiles_of_the_datasets_size(folder):
    data, protocol = fmnist()  # 1 channel, 28 px
    stream = build_free_stream(FreeStreamConfig(source="folder", root=str(folder), tiles=2), data, protocol)
    assert len(stream) == 4 * 4 and stream.class_names == ("n001", "n002")
    x = stream.load(np.arange(16))
    assert x.shape == (16, 1, 28, 28) and x.dtype == torch.uint8
    # 64 px → 56 px (2 × 28): each tile is one quadrant, a flat grey (PIL's L = (299R + 587G + 114B) / 1000, rounded)
    grey = lambda rgb: int((299 * rgb[0] + 587 * rgb[1] + 114 * rgb[2]) / 1000 + 0.5)  # noqa: E731
    assert [int(x[k].float().mean().round()) for k in range(4)] == [10, 20, 30, 40]
    assert [int(x[k, 0, 14, 14]) for k in range(8, 12)] == [grey((200, 0, 0)), grey((0, 200, 0)), grey((0, 0, 200)), 90]


def test_heldout_stream_is_the_training_images_of_the_classes_left_out():
    data, protocol = fmnist(n_protocol=6)
    stream = build_free_stream(FreeStreamConfig(source="heldout"), data, protocol)
    want = np.flatnonzero(data.train.labels >= 6)
    assert len(stream) == len(want) and stream.class_names == data.class_names[6:]
    assert torch.equal(stream.load(np.array([0, len(want) - 1])), data.train.load(want[[0, -1]]))
    with pytest.raises(ConfigError, match=r"\['pullover'\] are classes of the protocol"):
        build_free_stream(FreeStreamConfig(source="heldout", classes=["pullover", "bag"]), data, protocol)
    full = Protocol.build(data.n_classes, n_base=4, n_phases=3, class_names=data.class_names)
    with pytest.raises(ConfigError, match="lists every class of the dataset"):
        build_free_stream(FreeStreamConfig(source="heldout"), data, full)


def test_scikit_image_stream_has_no_fashion_mnist_class():
    pytest.importorskip("skimage")
    data, protocol = fmnist()
    stream = build_free_stream(FreeStreamConfig(source="skimage", tiles=2), data, protocol)
    assert "astronaut" in stream.class_names and len(stream) == 4 * len(stream.files)
    assert stream.load(np.array([0, 5])).shape == (2, 1, 28, 28)


def test_bad_streams_are_errors_naming_the_path(folder, tmp_path):
    data, protocol = fmnist()
    cfg = lambda root, **kw: FreeStreamConfig(source="folder", root=str(root), **kw)  # noqa: E731
    with pytest.raises(DataError, match=rf"{tmp_path / 'nowhere'}: free-stream folder not found"):
        build_free_stream(cfg(tmp_path / "nowhere"), data, protocol)
    (tmp_path / "file.png").write_bytes(b"")
    with pytest.raises(DataError, match=rf"{tmp_path / 'file.png'}: the free stream must be a folder"):
        build_free_stream(cfg(tmp_path / "file.png"), data, protocol)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=rf"{tmp_path / 'empty'}: no class folders with images"):
        build_free_stream(cfg(tmp_path / "empty"), data, protocol)
    # a class shared with the protocol: the readable name "Pullover" matches Fashion-MNIST's "pullover"
    (folder / "classes.txt").write_text("n001 volcano\nn002 Pullover\n")
    with pytest.raises(DataError, match=rf"{folder}: the free stream shares classes \['pullover'\] with the protocol"):
        build_free_stream(cfg(folder), data, protocol)
    assert len(build_free_stream(cfg(folder, allow_overlap=True), data, protocol)) == 4
    (folder / "n002" / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(DataError, match=rf"{folder / 'n002' / 'b.png'}: cannot read image"):
        build_free_stream(cfg(folder, allow_overlap=True), data, protocol)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any folder")
def test_unreadable_stream_folder_is_an_error_naming_it(folder):
    data, protocol = fmnist()
    folder.chmod(0)
    try:
        with pytest.raises(DataError, match=rf"{folder}: cannot read the free-stream folder"):
            build_free_stream(FreeStreamConfig(source="folder", root=str(folder)), data, protocol)
    finally:
        folder.chmod(0o755)


# --- training ------------------------------------------------------------------------------------------

def placebo_config(method, folder, *extra):
    return tiny_config(method, f"method.placebo.stream.source=folder", f"method.placebo.stream.root={folder}",
                       "method.placebo.stream.tiles=2", "method.placebo.candidates=8", "method.placebo.per_step=4",
                       "data.train_per_class=12", "data.test_per_class=4", *extra)


@pytest.mark.parametrize("method", ["lwf_placebo", "icarl_placebo", "lucir_placebo", "podnet_placebo",
                                    "lucir_aanets_placebo", "podnet_aanets_placebo"])
def test_no_placebo_outlives_its_batch_and_the_memory_is_the_base_learners(method, folder, tmp_path, monkeypatch):
    seen_distances = []  # every step's placebo distances, to check the logged running mean against a plain mean

    def recorded(*args, **kwargs):
        seen_distances.extend(placebo_module.target_distances_unpatched(*args, **kwargs).tolist())
        return placebo_module.target_distances_unpatched(*args, **kwargs)

    monkeypatch.setattr(placebo_module, "target_distances_unpatched", placebo_module.target_distances, raising=False)
    monkeypatch.setattr(placebo_module, "target_distances", recorded)
    extra = ["method.use_memory=true"] if method == "lwf_placebo" else []
    extra += ["method.balanced_finetune_epochs=1"] if "podnet" in method else []
    held, used = [], []

    def after_step(trainer, phase, epoch, step):
        if phase > 0:
            held.append(trainer.learner.placebos_held())
            used.append(trainer.learner.placebo_log["phases"][-1]["placebos_used"])

    # 4 classes (2 base, one phase of 2), 8 training images per class, 2 epochs: 3 steps of 16 per epoch
    cfg = placebo_config(method, folder, "train.epochs=2", "protocol.class_order=[0,1,2,3]", "protocol.n_phases=1",
                         "data.train_per_class=8", *extra)
    result = Trainer(cfg, tmp_path, progress=False, callbacks=[after_step]).run()
    assert held == [0] * 4  # after every batch: no stream image referenced any more
    assert used == [4, 8, 12, 16]  # 4 placebos drawn and used per step
    (phase,) = result.metrics["method_report"]["placebo"]["phases"]
    assert phase["steps"] == 4 and phase["held_after_batch_max"] == 0
    assert len(seen_distances) == 16 and 0 <= phase["exemplar_distance"] <= 2
    assert phase["placebo_distance"] == pytest.approx(sum(seen_distances) / 16, abs=1e-6)  # float32 sums
    assert len(phase["arms"]) == len(phase["rewards"]) == 2  # one policy round per epoch
    assert result.metrics["memory_per_class"] == {str(c): 5 for c in range(4)}  # no extra memory


def test_the_online_policy_plays_exp3_on_the_logged_rewards(folder, tmp_path):
    cfg = placebo_config("icarl_placebo", folder, "train.epochs=3", "method.placebo.exploration=0.5")
    result = Trainer(cfg, tmp_path, progress=False)
    result.run()
    learner = result.learner
    phases = learner.placebo_log["phases"]
    # reward: accuracy on the withheld last exemplar of each old class (2, then 4 old classes)
    assert all(r * n == round(r * n) for p, n in zip(phases, (2, 4)) for r in p["rewards"])
    replay = Exp3(5, 0.5)  # a plain replay of the logged (arm, reward) rounds, both phases
    for p in phases:
        for arm, reward in zip(p["arms"], p["rewards"]):
            replay.update(arm, reward)
    assert torch.allclose(learner.policy.log_weights, replay.log_weights, rtol=0, atol=1e-12)


def test_a_stream_broken_before_a_resume_is_an_error_and_the_checkpoint_is_kept(folder, tmp_path):
    class Kill(Exception):
        pass

    def kill(trainer, phase, epoch, step):
        if phase == 1:
            raise Kill()

    cfg = placebo_config("lucir_placebo", folder)
    with pytest.raises(Kill):
        Trainer(cfg, tmp_path / "run", progress=False, callbacks=[kill]).run()
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    before = last.read_bytes()
    good = (folder / "n001" / "a.png").read_bytes()
    (folder / "n001" / "a.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match=rf"{folder / 'n001' / 'a.png'}: cannot read image"):
        run(cfg, tmp_path / "run", resume=True, progress=False)
    assert last.read_bytes() == before
    (folder / "n001" / "a.png").write_bytes(good)
    assert run(cfg, tmp_path / "run", resume=True, progress=False).metrics["complete"]


def test_online_policy_without_exemplars_is_a_config_error(folder, tmp_path):
    with pytest.raises(ConfigError, match="use_memory=true"):
        Trainer(placebo_config("lwf_placebo", folder), tmp_path, progress=False)
    with pytest.raises(ConfigError, match=r"per_step \(9\) ≤ candidates \(8\)"):
        Trainer(placebo_config("lucir_placebo", folder, "method.placebo.per_step=9"), tmp_path, progress=False)


@pytest.mark.parametrize("kd_on", ["all", "old_and_placebos", "placebos"])
def test_kd_on_names_the_rows_distilled_on(kd_on, folder, tmp_path):
    cfg = placebo_config("lucir_placebo", folder, f"method.placebo.kd_on={kd_on}", "protocol.class_order=[0,1,2,3]",
                         "protocol.n_phases=1", "data.train_per_class=8")
    trainer = Trainer(cfg, tmp_path, progress=False)
    learner, seen = trainer.learner, []
    supervised, distillation = learner.supervised_loss, learner.distillation

    def record_labels(out, y, ctx):
        seen.append({"labelled": len(y), "old": int((y < ctx.n_old).sum())})
        return supervised(out, y, ctx)

    def record_rows(out, x, ctx):
        if ctx.phase:
            seen[-1]["kd"] = len(x) if len(out["logits"]) == len(x) else None
        return distillation(out, x, ctx)

    learner.supervised_loss, learner.distillation = record_labels, record_rows
    trainer.run()
    steps = [s for s in seen if "kd" in s]
    assert len(steps) == 2  # phase 1: 16 new images + 8 exemplars (one per old class withheld): batches of 16, 8
    want = {"all": lambda s: s["labelled"] + 4, "old_and_placebos": lambda s: s["old"] + 4, "placebos": lambda s: 4}
    assert [s["kd"] for s in steps] == [want[kd_on](s) for s in steps]
    assert all(s["old"] > 0 for s in steps) and all(s["labelled"] > s["old"] for s in steps)
