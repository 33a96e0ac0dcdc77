"""The CIL trainer's GPU path on the CPU: ``train.amp`` (torch autocasts bf16 and fp16 on CPUs too), the fp16
gradient scaler in checkpoints, ``channels_last``, and the default that changes nothing."""

from __future__ import annotations

import contextlib
from collections import defaultdict

import pytest
import torch
from torch import nn

from scarce.cil import run
from scarce.cil.trainer import Trainer
from scarce.errors import ConfigError
from scarce.training.gpu_path import GPUPath

from cil_helpers import tiny_config

# Every learner path with a training step in one method: the phase's loop, PlaceboCIL's candidate scoring and
# extra forward, AANets' aggregation steps, LUCIR's class-balanced finetuning. 4 classes of 6 training images:
# phase 0 trains 1 step (12 images), phase 1 two (12 new images and 5 exemplars per old class); the free
# stream is the held-out classes 4-9.
EVERY_PATH = ("method.aggregation_lr=0.01", "method.balanced_finetune=true", "method.balanced_finetune_epochs=1",
              "method.placebo.policy=fixed", "method.placebo.stream.source=heldout", "method.placebo.candidates=8",
              "method.placebo.per_step=4", "protocol.class_order=[0,1,2,3]", "protocol.n_phases=1",
              "data.train_per_class=6", "data.test_per_class=2")


def every_path_config(*extra: str):
    return tiny_config("lucir_aanets_placebo", *EVERY_PATH, *extra)


# the learner's methods, named by the path they run (the innermost one names a forward pass)
PATHS = {"before_phase": "before phase (imprinting, prototypes)", "loss": "phase loop",
         "_placebo_batch": "placebo candidates", "end_epoch": "aggregation", "update_memory": "herding",
         "after_phase": "balanced finetune", "compute_class_means": "class means", "predict": "evaluation"}


@contextlib.contextmanager
def forward_precision(trainer: Trainer):
    """The dtypes the batch norms of the learner's networks saw (their input: a convolution's output), by path."""
    learner, stack, seen = trainer.learner, [], defaultdict(set)

    def labelled(method, name):
        def call(*args, **kwargs):
            stack.append(name)
            try:
                return method(*args, **kwargs)
            finally:
                stack.pop()
        return call

    for method, name in PATHS.items():
        if hasattr(learner, method):  # PlaceboCIL's candidates exist in its learners only
            setattr(learner, method, labelled(getattr(learner, method), name))

    def record(module, inputs, output):
        if isinstance(module, nn.BatchNorm2d):
            seen[stack[-1] if stack else "elsewhere"].add(inputs[0].dtype)

    handle = nn.modules.module.register_module_forward_hook(record)
    try:
        yield seen
    finally:
        handle.remove()


def expected_precision(dtype: torch.dtype, paths=PATHS.values()) -> dict[str, set[torch.dtype]]:
    training = ("phase loop", "placebo candidates", "aggregation", "balanced finetune", "evaluation")
    return {name: {dtype if name in training else torch.float32} for name in paths}


def plain_gpu_path(monkeypatch) -> None:
    """GPUPath replaced by the plain fp32 calls the trainer made before it had one."""
    monkeypatch.setattr(GPUPath, "autocast", lambda self: contextlib.nullcontext())
    monkeypatch.setattr(GPUPath, "scale", lambda self, loss: loss)
    monkeypatch.setattr(GPUPath, "step", lambda self, optimizer: optimizer.step())
    monkeypatch.setattr(GPUPath, "images", lambda self, images: images.to(self.device))


def weights(run_dir):
    return torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["learner"]["net"]


@pytest.fixture(autouse=True)
def no_report(monkeypatch):
    """These tests compare numbers; drawing each run's report.html would double their time."""
    monkeypatch.setattr("scarce.cil.report.write_run_report", lambda *args, **kwargs: None)


def test_the_default_is_the_plain_fp32_loop_bit_for_bit_and_bf16_autocasts_every_training_step(tmp_path, monkeypatch):
    cfg = every_path_config()
    assert (cfg.train.amp, cfg.train.channels_last, cfg.train.pin_memory) == ("none", False, False)
    default = Trainer(cfg, tmp_path / "default", progress=False)
    with forward_precision(default) as seen:
        fp32 = default.run()
    assert dict(seen) == expected_precision(torch.float32)
    with monkeypatch.context() as patch:
        plain_gpu_path(patch)
        plain = run(cfg, tmp_path / "plain", progress=False)
    for head in ("cnn", "nme"):
        assert fp32.matrices[head].per_task == plain.matrices[head].per_task
    a, b = weights(tmp_path / "default"), weights(tmp_path / "plain")
    assert all(torch.equal(a[k], b[k]) for k in a)

    # bf16: every training step's forward (and the test-set evaluation) in bf16; herding, class means,
    # imprinting and PlaceboCIL's prototypes in fp32; the weights stay fp32, finite and close to fp32's
    trainer = Trainer(every_path_config("train.amp=bf16"), tmp_path / "bf16", progress=False)
    with forward_precision(trainer) as seen:
        bf16 = trainer.run()
    assert dict(seen) == expected_precision(torch.bfloat16)
    assert trainer.learner.class_means.dtype == torch.float32
    c = weights(tmp_path / "bf16")
    floats = [k for k in a if a[k].is_floating_point()]
    assert all(c[k].dtype == torch.float32 and torch.isfinite(c[k]).all() for k in floats)
    fp32_weights, bf16_weights = (torch.cat([w[k].flatten() for k in floats]) for w in (a, c))
    assert not torch.equal(fp32_weights, bf16_weights)
    # 3 SGD steps, 2 aggregation steps and a finetuning pass: bf16's rounding (3 significant digits) moved the
    # weights by 0.04 % of their norm here
    assert torch.linalg.norm(bf16_weights - fp32_weights) <= 0.01 * torch.linalg.norm(fp32_weights)
    for head in ("cnn", "nme"):
        for row_fp32, row_bf16 in zip(fp32.matrices[head].per_task, bf16.matrices[head].per_task):
            assert row_bf16 == pytest.approx(row_fp32, abs=25.0)  # percent; a test class has 2 images here


class Kill(Exception):
    pass


def kill_at(global_step: int):
    def callback(trainer, phase, epoch, step):
        if trainer.global_step == global_step:
            raise Kill()
    return callback


# fp16 convolutions' backward pass has no fast kernel on CPUs without native fp16 (seconds per batch here), so
# the resumed runs are the smallest with a kill between two checkpoints: 4 classes of 4 images, batches of 4;
# phase 0 trains steps 1-2, phase 1 steps 3-5 (8 new images, 4 exemplars), then the balanced finetuning
SMALL = ("protocol.class_order=[0,1,2,3]", "protocol.n_phases=1", "data.train_per_class=4", "data.test_per_class=2",
         "protocol.memory.size=2", "train.batch_size=4", "train.checkpoint_every=2", "method.balanced_finetune=true",
         "method.balanced_finetune_epochs=1", "train.channels_last=true", "train.pin_memory=true")


# torch warns when a scheduler steps before its optimizer ever has; fp16's GradScaler skips the steps whose gradients
# overflow at its initial scale (2^16), which in this tiny run leaves a stage's first epoch without one: expected
@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before `optimizer.step\\(\\)`:UserWarning")
@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_a_resumed_mixed_precision_run_equals_an_uninterrupted_one(amp, tmp_path):
    cfg = tiny_config("lucir", f"train.amp={amp}", *SMALL)
    full = Trainer(cfg, tmp_path / "full", progress=False)
    with forward_precision(full) as seen:
        full_result = full.run()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]
    lucir_paths = [PATHS[m] for m in ("before_phase", "loss", "update_memory", "after_phase", "compute_class_means",
                                      "predict")]
    assert dict(seen) == expected_precision(dtype, lucir_paths)
    with pytest.raises(Kill):
        Trainer(cfg, tmp_path / "killed", progress=False, callbacks=[kill_at(5)]).run()
    saved = torch.load(tmp_path / "killed" / "checkpoints" / "last.pt", weights_only=True)
    assert (saved["phase"], saved["stage"], saved["global_step"]) == (1, "train", 4)
    resumed = Trainer(cfg, tmp_path / "killed", progress=False)
    resumed_result = resumed.run(resume=True)
    for head in ("cnn", "nme"):
        assert resumed_result.matrices[head].per_task == full_result.matrices[head].per_task
    a, b = weights(tmp_path / "full"), weights(tmp_path / "killed")
    assert all(torch.equal(a[k], b[k]) for k in a)
    final = [torch.load(tmp_path / name / "checkpoints" / "last.pt", weights_only=True)["scaler"]
             for name in ("full", "killed")]
    assert final[0] == final[1] == full.gpu.state_dict() == resumed.gpu.state_dict()
    if amp == "fp16":
        # the scale had moved before the kill (it counts good steps and halves on an overflow), so a resume
        # that started a fresh scaler would end elsewhere
        assert saved["scaler"] != torch.amp.GradScaler("cpu").state_dict() and saved["scaler"]["scale"] > 0
    else:
        assert final[0] == {}  # bf16 needs no scaler
    # channels-last: every 3×3 kernel of the network and its teacher; pinning is skipped on a CPU
    kernels = [w for net in (resumed.learner.net, resumed.learner.teacher) for w in net.state_dict().values()
               if w.dim() == 4]
    assert len(kernels) == 2 * 3 and all(w.is_contiguous(memory_format=torch.channels_last) for w in kernels)
    assert resumed.gpu.pin is False


def test_a_bad_amp_value_is_a_config_error_naming_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"train\.amp must be one of none, bf16, fp16, got 'fp8'"):
        run(tiny_config("icarl", "train.amp=fp8"), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()
