"""torchrun semantics, checked with 2 gloo processes on the CPU against one process: the classifier, CAMs, a
CIL learner, LPCAM's prototypes and the random walk's affinity network, a rank that dies.

The 2-process jobs start with the environment torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_*) and
join through :func:`scarce.distributed.session`, as ``torchrun -m scarce`` does. The reference is computed
here, in one process, by the unchanged single-process path (no process group).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import traceback
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from scarce.cams import CamConfig, build_cam_method
from scarce.cams.store import load_cam, load_cam_notes, save_cam
from scarce.cil.data import Preprocess
from scarce.cil.trainer import Trainer
from scarce.data.base import open_dataset
from scarce.distributed import World, batch_part, lost_peer, prepare_on_ranks, resolve_device, session, world
from scarce.errors import ConfigError, ScarceError
from scarce.lock import LOCK_NAME, run_lock
from scarce.methods.lpcam import LpCam
from scarce.models import CamClassifier, GlobalAvgPool, ModelConfig, build_classifier
from scarce.pipeline import extract_cams
from scarce.refinement import RefineContext, RefinerChain, RefineStep
from scarce.refinement import random_walk as random_walk_module
from scarce.refinement.affinity import AffinityNet, BackboneLevels
from scarce.training import AugmentConfig, TrainConfig, load_trained, train_classifier
from scarce.training.losses import MultiLabelObjective

# BN in training mode (synced over ranks), 4 global batches of 6 per epoch
SYNCED = TrainConfig(epochs=1, batch_size=6, lr=0.05, augment=AugmentConfig(crop_size=32), seed=5, freeze_bn=False)
# the classifier's default frozen BN; global batches of 5 (parts of 2 and 3), the last one smaller
FROZEN = TrainConfig(epochs=2, batch_size=5, lr=0.05, augment=AugmentConfig(crop_size=32), seed=5, checkpoint_every=2)
CAMS = CamConfig(scales=(1.0, 0.5), batch_size=3)
CIL = ["seed=0", "data.subset=true", "data.train_per_class=12", "data.test_per_class=6", "protocol.class_order=[0,1,2,3]",
       "protocol.n_base=2", "protocol.n_phases=1", "protocol.memory.size=3", "train.epochs=2", "train.batch_size=10",
       "train.lr=0.05", "train.schedule=constant", "train.threads=1", "train.checkpoint_every=0",
       "data.augment=crop_flip", "method.name=icarl"]  # crop_flip: each rank takes its items of the batch draws


def fresh_model(num_classes: int) -> CamClassifier:
    """A two-layer conv + BN classifier (a timm backbone costs seconds of first-use imports in every rank)."""
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                             nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU())
    model = CamClassifier(backbone, 16, num_classes, GlobalAvgPool(), ((0.5,) * 3, (0.25,) * 3))
    nn.init.normal_(model.classifier.weight, std=0.1)  # not the zero start: the backbone learns from step 1
    return model


# LPCAM with a reservoir small enough to sample (its sample depends on the order of the stream); batches of 3:
# the 14 training images make 5 batches, dealt 0, 2, 4 and 1, 3 (rank 1 sits out the last round)
LPCAM = CamConfig(method="lpcam", options={"k": 3, "max_features": 6, "max_iter": 10, "batch_size": 3})
# RIB with random disjoint draws that change its maps (a pool of 8 of the 14 training images, 2 a step)
RIB = CamConfig(method="rib", batch_size=1, scales=(1.0,), options={
    "rib_iter": 2, "rib_batch": 2, "rib_lr": 0.5, "pool_images": 8, "explode_ratio": 1.0, "tune": "all"})
# the affinity network: global batches of 5 (parts of 2 and 3), the last one of 4, random crops of 48 px
WALK = RefineStep("random_walk", {"train": {"epochs": 2, "batch_size": 5, "level_dim": 8, "embed_dim": 16,
                                            "crop_size": 48, "seed": 3}})


def fixed_model(num_classes: int) -> CamClassifier:
    """The same untrained timm classifier in every process (the affinity network reads timm's feature_info)."""
    torch.manual_seed(0)
    model = build_classifier(ModelConfig(backbone="test_efficientnet", pretrained=None), num_classes)
    nn.init.normal_(model.classifier.weight, std=0.1)
    return model.eval()


def train_split(scenes: Path, loaded: list[str] | None = None):
    """The training split; ``loaded`` notes the stem of every image read from it."""
    train = open_dataset("scenes", scenes, "train")
    if loaded is not None:
        read = train.load_image
        train.load_image = lambda sample: loaded.append(sample.stem) or read(sample)
    return train


def walk_context(scenes: Path, cams: Path, work_dir: Path, loaded: list[str] | None = None) -> RefineContext:
    """The refiners' context of the fixed classifier, with ground-truth seeds; ``loaded`` notes each image read."""
    train = train_split(scenes, loaded)
    return RefineContext(model=fixed_model(train.num_classes), datasets=lambda split: train, cam_dir=lambda split: cams,
                         work_dir=work_dir, confident=(0.5, 0.2), progress=False)


def cil_config():
    from scarce.cil import load_config

    return load_config(None, CIL)


# -- running 2 ranks ---------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank: int, size: int, port: int, job, args: tuple, report: Path) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(size),
                      LOCAL_RANK=str(rank), SCARCE_DIST_TIMEOUT="60")
    torch.set_num_threads(1)
    try:
        with session() as ranks:
            assert (ranks.rank, ranks.size) == (rank, size)
            job(*args)
    except BaseException as exc:  # noqa: BLE001  (reported to the test, which asserts on it)
        (report / f"rank{rank}.json").write_text(json.dumps({"type": type(exc).__name__, "lost_peer": lost_peer(exc),
                                                              "message": str(exc), "trace": traceback.format_exc()}))
        raise SystemExit(1)


def run_two_ranks(job, *args, report: Path) -> list[int | None]:
    """Start ``job(*args)`` in 2 processes joined as a torchrun job would be; their exit codes.

    The processes are forked (one thread, no process group in the parent), so they start with the modules
    this process already imported instead of spending seconds importing torch's optimiser and compiler stack.
    """
    report.mkdir(parents=True, exist_ok=True)
    context = mp.get_context("fork")
    port = _free_port()
    processes = [context.Process(target=_entry, args=(rank, 2, port, job, args, report)) for rank in range(2)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=180)
    for process in processes:
        if process.is_alive():
            process.kill()
    return [process.exitcode for process in processes]


def _job_train_and_extract(scenes: Path, out: Path) -> None:
    """Classifier with synced BN, its CAMs of val (sharded under torchrun), a CIL run."""
    data = open_dataset("scenes", scenes, "train")
    model = fresh_model(data.num_classes)
    train_classifier(model, data, SYNCED, out / "classifier", progress=False)
    extract_cams(load_trained(model, out / "classifier" / "model.pt"), open_dataset("scenes", scenes, "val"), CAMS,
                 out / "cams", progress=False)
    Trainer(cil_config(), out / "cil", progress=False).run()


def _job_prepare(scenes: Path, cams: Path, out: Path) -> None:
    """LPCAM's prototypes and the affinity network of the fixed classifier, prepared as the pipeline does (every
    rank at once); each rank notes the images it read and the prototypes it holds."""
    rank = world().rank
    loaded: list[str] = []
    train = train_split(scenes, loaded)
    method = LpCam(LPCAM)
    prepare_on_ranks(method, fixed_model(train.num_classes), train, out / "lpcam")
    (out / "lpcam" / f"loaded{rank}.json").write_text(json.dumps(loaded))
    torch.save(method.prototypes, out / "lpcam" / f"prototypes{rank}.pt")

    loaded = []
    prepare_on_ranks(RefinerChain([WALK]), walk_context(scenes, cams, out / "walk", loaded))
    (out / "walk" / f"loaded{rank}.json").write_text(json.dumps(loaded))

    rib = build_cam_method(RIB)  # its pool drawn by rank 0 first, then the others; each image's draws by name
    prepare_on_ranks(rib, fixed_model(train.num_classes), train, out / "rib")
    extract_cams(fixed_model(train.num_classes), open_dataset("scenes", scenes, "val"), RIB, out / "rib" / "cams",
                 method=rib, progress=False)


def _job_two_ranks(scenes: Path, cams: Path, out: Path) -> None:
    """The 2-rank job (one, as each start costs seconds of imports): the equivalence runs, an affinity training
    stopped after its first epoch, then a training in which rank 1 dies after step 5 (the last checkpoint is
    step 4); rank 0 must stop with a report, not hang."""
    _job_train_and_extract(scenes, out)
    _job_prepare(scenes, cams, out)

    class Stopped(Exception):
        pass

    def stop(epoch: int) -> None:
        raise Stopped

    train_affinity = random_walk_module.train_affinity  # patched in this forked process only
    random_walk_module.train_affinity = lambda *args, **kwargs: train_affinity(*args, **kwargs, on_epoch=stop)
    try:
        prepare_on_ranks(RefinerChain([WALK]), walk_context(scenes, cams, out / "walk_stopped"))
    except Stopped:
        pass
    data = open_dataset("scenes", scenes, "train")

    def die(epoch: int, step: int) -> None:
        if step == 5 and world().rank == 1:
            os._exit(3)

    train_classifier(fresh_model(data.num_classes), data, FROZEN, out / "killed", progress=False, on_step=die)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One thread, as in each rank: the same CPU kernels (identical CAM files), and no oversubscription."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def seed_cams(tiny_scenes, tmp_path_factory) -> Path:
    """Seed CAMs of the training images for the affinity network: their ground-truth masks."""
    out = tmp_path_factory.mktemp("seed_cams")
    train = open_dataset("scenes", tiny_scenes, "train")
    for sample in train.samples:
        mask = train.load_mask(sample)
        save_cam(out / f"{sample.stem}.npz", np.stack([(mask == c + 1).astype(np.float32) for c in sample.labels]),
                 list(sample.labels))
    return out


@pytest.fixture(scope="module")
def two_ranks(tiny_scenes, seed_cams, tmp_path_factory, one_process) -> Path:  # after one_process: forks its imports
    out = tmp_path_factory.mktemp("two_ranks")
    codes = run_two_ranks(_job_two_ranks, tiny_scenes, seed_cams, out, report=out / "report")
    errors = [p.read_text() for p in (out / "report").glob("*.json")]
    assert codes == [1, 3], errors  # rank 1 died on purpose at the end; rank 0 reported it
    return out


@pytest.fixture(scope="module")
def one_process(tiny_scenes, seed_cams, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("one_process")
    _job_train_and_extract(tiny_scenes, out)
    _job_prepare(tiny_scenes, seed_cams, out)
    return out


def assert_same_weights(a: dict, b: dict, atol: float) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if a[key].is_floating_point():
            torch.testing.assert_close(a[key], b[key], atol=atol, rtol=1e-4, msg=key)
        else:
            assert torch.equal(a[key], b[key]), key


# -- equivalence ------------------------------------------------------------------------------------
def test_two_ranks_train_the_classifier_of_one_process(two_ranks, one_process, tiny_scenes):
    """2 processes × parts of each global batch of 6 = 1 process × 6, BN synced: the same weights (and BN
    running statistics) and the same logged loss."""
    two = torch.load(two_ranks / "classifier" / "model.pt", weights_only=True)["model"]
    one = torch.load(one_process / "classifier" / "model.pt", weights_only=True)["model"]
    assert_same_weights(two, one, atol=1e-5)
    initial = fresh_model(open_dataset("scenes", tiny_scenes, "train").num_classes).state_dict()
    moved = [k for k in one if one[k].is_floating_point() and not torch.equal(one[k], initial[k])]
    assert any("running_mean" in k for k in moved)  # BN really trained, so its statistics were compared
    rows = [line.split(",") for line in (two_ranks / "classifier" / "train_log.csv").read_text().splitlines()[1:]]
    ref = [line.split(",") for line in (one_process / "classifier" / "train_log.csv").read_text().splitlines()[1:]]
    assert [float(r[2]) for r in rows] == pytest.approx([float(r[2]) for r in ref], rel=1e-5)
    assert not (two_ranks / "classifier" / LOCK_NAME).exists()


def test_sharded_cams_are_the_files_of_one_process(two_ranks, one_process, tiny_scenes):
    stems = [s.stem for s in open_dataset("scenes", tiny_scenes, "val").samples]
    assert sorted(p.stem for p in (two_ranks / "cams").glob("*.npz")) == sorted(stems)
    assert not list((two_ranks / "cams").glob(".*.tmp"))  # every file written atomically
    for stem in stems:
        cams_two, keys_two = load_cam(two_ranks / "cams" / f"{stem}.npz")
        cams_one, keys_one = load_cam(one_process / "cams" / f"{stem}.npz")
        assert np.array_equal(keys_two, keys_one)
        # the classifiers agree to 1e-5, not bitwise: the maps agree to float16's rounding of [0, 1] values
        np.testing.assert_allclose(cams_two, cams_one, atol=1e-3)


def test_sharded_cams_of_one_model_are_identical(two_ranks, tiny_scenes, tmp_path):
    """The same classifier (the 2-rank one), CAMs in one process here: bit-identical maps."""
    data = open_dataset("scenes", tiny_scenes, "train")
    model = load_trained(fresh_model(data.num_classes), two_ranks / "classifier" / "model.pt")
    extract_cams(model, open_dataset("scenes", tiny_scenes, "val"), CAMS, tmp_path, progress=False)
    for path in (two_ranks / "cams").glob("*.npz"):
        two, one = load_cam(path), load_cam(tmp_path / path.name)
        assert np.array_equal(two[0], one[0]) and np.array_equal(two[1], one[1]), path.name


def test_rib_cams_of_two_ranks_are_the_files_of_one_process(two_ranks, one_process, tiny_scenes):
    """RIB draws each image's disjoint images by its name, not from one generator running through the split, so
    the images a rank is dealt get the draws one process gives them: bit-identical maps and the same notes."""
    stems = [sample.stem for sample in open_dataset("scenes", tiny_scenes, "val").samples]
    for stem in stems:
        two, one = two_ranks / "rib" / "cams" / f"{stem}.npz", one_process / "rib" / "cams" / f"{stem}.npz"
        assert np.array_equal(load_cam(two)[0], load_cam(one)[0]), stem
        assert load_cam_notes(two) == load_cam_notes(one) and load_cam_notes(one)["steps"] == 2


def test_two_ranks_train_the_cil_learner_of_one_process(two_ranks, one_process):
    """iCaRL (a mean of per-image losses) on a BN network: 2 ranks reach one process's learner and accuracies."""
    two = torch.load(two_ranks / "cil" / "checkpoints" / "last.pt", weights_only=True)
    one = torch.load(one_process / "cil" / "checkpoints" / "last.pt", weights_only=True)
    assert_same_weights(two["learner"]["net"], one["learner"]["net"], atol=1e-5)
    assert two["rows"] == one["rows"]
    assert json.loads((two_ranks / "cil" / "acc_matrix.json").read_text())["heads"] == \
        json.loads((one_process / "cil" / "acc_matrix.json").read_text())["heads"]


def test_two_ranks_fit_the_lpcam_prototypes_of_one_process(two_ranks, one_process, tiny_scenes):
    """Each rank computed the features of the batches dealt to it, and rank 0 streamed them into the reservoir
    in one process's order: the same prototypes, bit for bit, in lpcam.pt and in both ranks."""
    one = torch.load(one_process / "lpcam" / "lpcam.pt", weights_only=True)
    two = torch.load(two_ranks / "lpcam" / "lpcam.pt", weights_only=True)
    assert one["prototypes"].keys() == two["prototypes"].keys()
    for rank in range(2):
        held = torch.load(two_ranks / "lpcam" / f"prototypes{rank}.pt", weights_only=True)
        for key, value in one["prototypes"].items():
            assert torch.equal(two["prototypes"][key], value) and torch.equal(held[key], value), (rank, key)
    assert two["stats"] == one["stats"]
    assert len(one["prototypes"]["fg"]) and len(one["prototypes"]["context"])
    stems = [sample.stem for sample in open_dataset("scenes", tiny_scenes, "train").samples]
    assert len(stems) == 14  # images of one size: batches of 3 consecutive images, the last one of 2
    batches = [stems[i:i + 3] for i in range(0, 14, 3)]
    assert json.loads((two_ranks / "lpcam" / "loaded0.json").read_text()) == batches[0] + batches[2] + batches[4]
    assert json.loads((two_ranks / "lpcam" / "loaded1.json").read_text()) == batches[1] + batches[3]


def test_lpcam_prototypes_depend_on_the_order_of_the_stream(one_process, tiny_scenes):
    """Why the rows must reach rank 0 in the global order: rank 0's batches first, then rank 1's, fill the
    reservoir with another sample, and other prototypes come out."""
    train = open_dataset("scenes", tiny_scenes, "train")
    samples = train.samples
    rank_major = [samples[i] for start in (0, 6, 12, 3, 9) for i in range(start, min(start + 3, 14))]
    prototypes = LpCam(LPCAM).fit(fixed_model(train.num_classes), train.subset(rank_major))
    one = torch.load(one_process / "lpcam" / "lpcam.pt", weights_only=True)["prototypes"]
    assert not all(torch.equal(prototypes[key], one[key]) for key in ("fg", "context"))


def test_two_ranks_train_the_affinity_network_of_one_process(two_ranks, one_process, tiny_scenes):
    """Each rank read only its part of each global batch (parts of 2 and 3 of batches 5, 5, 4 per epoch) and
    the two reached one process's affinity network."""
    two = torch.load(two_ranks / "walk" / "random_walk" / "affinity.pt", weights_only=True)
    one = torch.load(one_process / "walk" / "random_walk" / "affinity.pt", weights_only=True)
    assert two["identity"] == one["identity"]
    assert_same_weights(two["net"], one["net"], atol=1e-5)
    train = open_dataset("scenes", tiny_scenes, "train")
    with torch.random.fork_rng(devices=[]):  # the refiner's initial network (seeded by train.seed)
        torch.manual_seed(3)
        initial = AffinityNet(BackboneLevels(fixed_model(train.num_classes)).channels, 8, 16).state_dict()
    assert all((one["net"][key] - initial[key]).abs().max() > 1e-3 for key in initial)  # every layer trained
    stems = sorted(sample.stem for sample in train.samples)
    rank0 = json.loads((two_ranks / "walk" / "loaded0.json").read_text())
    rank1 = json.loads((two_ranks / "walk" / "loaded1.json").read_text())
    assert (len(rank0), len(rank1)) == (2 * (2 + 2 + 2), 2 * (3 + 3 + 2))
    for epoch in range(2):  # each epoch every image once, by one of the ranks
        assert sorted(rank0[6 * epoch:6 * epoch + 6] + rank1[8 * epoch:8 * epoch + 8]) == stems


def test_an_affinity_checkpoint_of_two_ranks_resumes_in_one_process(two_ranks, one_process, tiny_scenes, seed_cams):
    """Stopped after epoch 1 in 2 processes, finished in one: the network of one uninterrupted process."""
    chain = RefinerChain([WALK])
    chain.prepare(walk_context(tiny_scenes, seed_cams, two_ranks / "walk_stopped"))
    one = torch.load(one_process / "walk" / "random_walk" / "affinity.pt", weights_only=True)
    assert_same_weights(chain.refiners[0].net.state_dict(), one["net"], atol=1e-5)


# -- a rank that dies ------------------------------------------------------------------------------
def test_a_dead_rank_is_reported_and_the_run_resumes_in_one_process(two_ranks, tiny_scenes, tmp_path):
    out = two_ranks / "killed"
    survivor = json.loads((two_ranks / "report" / "rank0.json").read_text())
    assert survivor["lost_peer"], survivor["trace"]
    assert "in train_classifier" in survivor["trace"]  # stopped in the training step, at a collective
    assert torch.load(out / "checkpoint.pt", weights_only=True)["step"] == 4
    assert not (out / "model.pt").exists()

    data = open_dataset("scenes", tiny_scenes, "train")
    train_classifier(fresh_model(data.num_classes), data, FROZEN, out, resume=True, progress=False)  # 1 process now
    train_classifier(fresh_model(data.num_classes), data, FROZEN, tmp_path / "straight", progress=False)
    resumed = torch.load(out / "model.pt", weights_only=True)["model"]
    straight = torch.load(tmp_path / "straight" / "model.pt", weights_only=True)["model"]
    assert_same_weights(resumed, straight, atol=1e-5)


# -- single-process pieces ------------------------------------------------------------------------
def test_batch_parts_cover_the_batch_and_differ_by_at_most_one():
    for size in (2, 7, 10):
        parts = [batch_part(size, World(rank, 3)) for rank in range(3)]
        covered = [i for part in parts for i in range(size)[part]]
        assert covered == list(range(size))
        lengths = [len(range(size)[part]) for part in parts]
        assert max(lengths) - min(lengths) <= 1
    assert [len(range(7)[batch_part(7, World(r, 2))]) for r in range(2)] == [3, 4]


def test_a_part_of_a_batch_gets_the_batch_augmentation_of_its_items():
    images = torch.randint(0, 256, (6, 1, 8, 8), dtype=torch.uint8)
    pre = Preprocess((0.5,), (0.25,), "crop_flip")
    whole = pre(images, torch.Generator().manual_seed(11))
    part = pre(images[2:5], torch.Generator().manual_seed(11), within=(2, 6))
    assert torch.equal(part, whole[2:5])
    assert not torch.equal(part, pre(images[2:5], torch.Generator().manual_seed(11)))  # the draws do differ


def test_a_second_run_in_a_folder_is_refused_and_a_stale_lock_taken_over(tmp_path):
    (tmp_path / LOCK_NAME).write_text(json.dumps({"host": "elsewhere", "pid": 1, "started": "2026-01-01T00:00:00",
                                                   "command": "scarce run other.yaml"}))
    with pytest.raises(ScarceError, match=r"in use by process 1 on elsewhere .*scarce run other.yaml"):
        with run_lock(tmp_path):
            pass
    dead = subprocess.Popen(["true"])
    dead.wait()
    (tmp_path / LOCK_NAME).write_text(json.dumps({"host": socket.gethostname(), "pid": dead.pid}))
    with run_lock(tmp_path):
        holder = json.loads((tmp_path / LOCK_NAME).read_text())
        assert holder["pid"] == os.getpid()
        with run_lock(tmp_path):  # the same process again (a nested stage): allowed
            pass
        assert (tmp_path / LOCK_NAME).exists()
    assert not (tmp_path / LOCK_NAME).exists()


# -- the device path --------------------------------------------------------------------------------
class RecordsPrecision(MultiLabelObjective):
    """The cam objective, noting the dtype of the logits of each step (autocast's, when on)."""

    def __init__(self) -> None:
        super().__init__()
        self.dtypes: list[torch.dtype] = []

    def forward(self, model, images, labels, progress):
        self.dtypes.append(model(images).dtype)
        return super().forward(model, images, labels, progress)


@pytest.mark.parametrize("amp, dtype", [("none", torch.float32), ("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_amp_runs_the_forward_pass_in_its_precision_and_keeps_float32_weights(tiny_scenes, tmp_path, amp, dtype):
    data = open_dataset("scenes", tiny_scenes, "train")
    objective = RecordsPrecision()
    cfg = replace(FROZEN, epochs=1, amp=amp, channels_last=True, pin_memory=True)  # pinning is skipped on a CPU
    train_classifier(fresh_model(data.num_classes), data, cfg, tmp_path, objective=objective, progress=False)
    assert objective.dtypes == [dtype] * 3  # 14 images, global batches of 5
    weights = torch.load(tmp_path / "model.pt", weights_only=True)["model"]
    assert all(w.dtype == torch.float32 and torch.isfinite(w).all() for w in weights.values() if w.is_floating_point())


def test_device_names_resolve_or_fail_clearly(tiny_scenes, tmp_path):
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ConfigError, match="device must be auto, cpu, cuda or cuda:N, got 'gpu'"):
        resolve_device("gpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA device"):
            resolve_device("cuda")
    data = open_dataset("scenes", tiny_scenes, "train")
    with pytest.raises(ConfigError, match="train.amp must be one of none, bf16, fp16, got 'fp8'"):
        train_classifier(fresh_model(data.num_classes), data, replace(FROZEN, amp="fp8"), tmp_path, progress=False)
    assert not (tmp_path / "checkpoint.pt").exists()
