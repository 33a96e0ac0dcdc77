"""One job in several processes (``torchrun``): the process group, the split of work, gradient and BN sync.

Every trainer and extraction loop of scarce calls this module and nothing else for multi-process work:

- :func:`session` joins the job when the process was started by ``torchrun`` (it reads ``RANK``,
  ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT`` from the environment) with gloo for CPU
  tensors and NCCL for CUDA tensors; without those variables it does nothing, and every helper below then
  behaves as in a single process (no collective is called, so single-process results are unchanged).
- **Global batches.** A config's ``batch_size`` is the *global* batch: each step takes the next
  ``batch_size`` samples of the epoch's order, the same in every process (the order is a function of (seed,
  epoch)), and :func:`batch_part` gives each rank its contiguous part. After each rank's ``backward`` of its
  loss scaled by its share of what the batch's mean divides by (images; labelled pixels for a pixel-mean
  loss: ``Objective.batch_weight``), :func:`sum_gradients` sums the gradients over ranks: the gradient of
  the mean loss over the whole batch, as one process computes it. N processes therefore
  reach the weights of one process, to float tolerance, and a checkpoint resumes under any process count.
  This is the all-reduce of ``DistributedDataParallel`` done once after ``backward`` instead of in buckets
  during it: scarce's objectives and CIL learners call submodules of the network directly (features, heads,
  several forwards), which the DDP wrapper, which hooks only its own ``forward``, would not see.
- **BatchNorm is synced.** Inside :func:`synced_batches` (the training step), BN layers in training mode
  normalise with the statistics of the global batch (an all-reduce of the per-channel sums, differentiable
  through :class:`_AllReduceSum`), so a BN network trains as in one process. Frozen BN (eval mode: the
  classifier's default) has nothing to sync. torch's own ``SyncBatchNorm`` runs on CUDA only and replaces
  modules; this runs with gloo on CPU too, so the equivalence is tested where the CI runs.
- **Extraction** splits its work with :func:`shard`: whole batches, dealt round-robin to ranks, so each image
  is computed in the very batch one process would put it in, and the files are the same. Where one
  consumer needs every batch's result in order (LPCAM's reservoir of features), :func:`gather_in_order`
  brings them to rank 0 round by round, in the order of one process.
- **Fitted state** (a CAM method's or refiner's ``prepare``, see :func:`prepare_on_ranks`) is either
  computed by every rank at once on its share (``shards_prepare``), or by rank 0 first and loaded from its
  cache by the others.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Iterable, Iterator, Sequence, TypeVar

import torch
import torch.distributed as dist
import torch.nn.functional as F

from scarce.errors import ConfigError, ScarceError

T = TypeVar("T")
TIMEOUT_ENV = "SCARCE_DIST_TIMEOUT"  # seconds a collective waits for the other ranks (default 30 minutes)


@dataclass(frozen=True)
class World:
    """This process's place in the job: ``rank`` of ``size`` processes, ``local_rank`` on its machine."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0 writes checkpoints, logs, scores and reports."""
        return self.rank == 0


def world() -> World:
    """The current job (a single process unless :func:`session` joined a torchrun job)."""
    if not (dist.is_available() and dist.is_initialized()):
        return World()
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def restart_count() -> int:
    """How often torchrun restarted this job's workers (``--max-restarts``); a restart resumes the run."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", 0))


@contextmanager
def session() -> Iterator[World]:
    """Join the torchrun job for the duration of a command (no-op outside torchrun or when already joined)."""
    if not launched_by_torchrun() or dist.is_initialized():
        yield world()
        return
    timeout = timedelta(seconds=float(os.environ.get(TIMEOUT_ENV, 1800)))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
    dist.init_process_group("cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo", timeout=timeout)
    try:
        yield world()
    finally:
        dist.destroy_process_group()


def lost_peer(exc: BaseException) -> bool:
    """Whether a collective failed because another rank of the job stopped (gloo raises a plain RuntimeError
    naming its transport; NCCL and the store raise ``DistError``)."""
    text = str(exc)
    return isinstance(exc, dist.DistError) or isinstance(exc, RuntimeError) and (
        "gloo" in text or "NCCL" in text or "Connection closed by peer" in text or "Connection reset by peer" in text)


def resolve_device(name: str) -> torch.device:
    """``auto``: this rank's GPU (``cuda:LOCAL_RANK``) when there is one, else the CPU; ``cuda``: this rank's GPU."""
    if name not in ("auto", "cpu", "cuda") and not name.startswith("cuda:"):
        raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, got {name!r}")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r}: no CUDA device is available (use device: auto or cpu)")
    return torch.device(f"cuda:{world().local_rank}" if name == "cuda" else name)


# -- splitting the work -----------------------------------------------------------------------------
def batch_part(size: int, w: World | None = None) -> slice:
    """This rank's contiguous part of a global batch of ``size`` samples (parts differ by at most one)."""
    w = w or world()
    return slice(w.rank * size // w.size, (w.rank + 1) * size // w.size)


def check_batch(batch_size: int, what: str) -> None:
    """Every rank needs at least one sample of each full batch."""
    size = world().size
    if batch_size < size:
        raise ConfigError(f"{what}={batch_size} is the global batch, split over {size} processes: "
                          f"give at least {size} (one sample per process)")


def shard(items: Iterable[T]) -> list[T]:
    """This rank's items of a sequence dealt round-robin (rank r gets items r, r + N, r + 2N, ...)."""
    w = world()
    return [item for i, item in enumerate(items) if i % w.size == w.rank]


def barrier() -> None:
    if world().size > 1:
        dist.barrier()


def main_first(action, *args, **kwargs):
    """Run ``action`` on rank 0, then on the other ranks (which find what rank 0 cached); a ScarceError of
    rank 0 is raised on every rank, so no rank waits forever for one that stopped."""
    w = world()
    if w.size == 1:
        return action(*args, **kwargs)
    failure: list[str | None] = [None]
    result = None
    if w.is_main:
        try:
            result = action(*args, **kwargs)
        except ScarceError as exc:
            failure[0] = str(exc)
    dist.broadcast_object_list(failure, src=0)
    if failure[0] is not None:
        if w.is_main:
            raise ScarceError(failure[0])
        raise ScarceError(f"rank 0 stopped: {failure[0]}")
    return result if w.is_main else action(*args, **kwargs)


def prepare_on_ranks(stateful, *args) -> None:
    """``stateful.prepare(*args)`` in every rank of the job (a CAM method, a refiner).

    One whose ``shards_prepare`` is true splits the work itself (LPCAM's feature collection, the affinity
    network's training) and runs in every rank at once; any other runs on rank 0 first, then on the others,
    which find what rank 0 cached (:func:`main_first`).
    """
    if getattr(stateful, "shards_prepare", False):
        stateful.prepare(*args)
    else:
        main_first(stateful.prepare, *args)


def on_main(action, *args, **kwargs) -> None:
    """Run ``action`` on rank 0 only (writing scores, reports, markers); the others wait for it."""
    main_first(lambda: action(*args, **kwargs) if world().is_main else None)


def all_sum(values: torch.Tensor) -> torch.Tensor:
    """The sum of ``values`` over ranks (``values`` itself in one process)."""
    return _all_reduce(values, dist.ReduceOp.SUM)


def all_max(values: torch.Tensor) -> torch.Tensor:
    """The elementwise maximum of ``values`` over ranks (``values`` itself in one process)."""
    return _all_reduce(values, dist.ReduceOp.MAX)


def _all_reduce(values: torch.Tensor, op) -> torch.Tensor:
    if world().size > 1:
        values = values.clone()
        dist.all_reduce(values, op)
    return values


def gather_in_order(results: Iterable[T], total: int) -> Iterator[T]:
    """On rank 0, the results of ``total`` items dealt by :func:`shard`, in the items' order; nothing elsewhere.

    ``results`` are this rank's results of its items, in order, computed lazily: each round takes the next
    result of every rank to rank 0 (``gather_object``; rank r's item of round t is item t·N + r), so rank 0
    receives exactly the stream one process computes, while holding at most N results at a time. Every rank
    must iterate to the end (each round is a collective).
    """
    w = world()
    if w.size == 1:
        yield from results
        return
    mine = iter(results)
    for first in range(0, total, w.size):
        result = next(mine) if first + w.rank < total else None
        received: list | None = [None] * w.size if w.is_main else None
        dist.gather_object(result, received, dst=0)
        if received is not None:
            yield from received[: total - first]


# -- gradients --------------------------------------------------------------------------------------
def sum_gradients(parameters: Sequence[torch.Tensor], extras: torch.Tensor) -> torch.Tensor:
    """Sum each parameter's gradient over ranks, in one all-reduce, and return the sum of ``extras``.

    A gradient that no rank has stays ``None`` (SGD then skips the parameter, as in one process); one that
    only some ranks have counts as zero on the others. ``extras`` (e.g. the loss sum and sample count) ride
    along in the same all-reduce. In one process nothing is touched.
    """
    if world().size == 1:
        return extras
    # the gradients' own precision (float32): the all-reduce carries as few bytes as the gradients have
    dtype, device = (parameters[0].dtype if parameters else extras.dtype), extras.device
    has = torch.tensor([p.grad is not None for p in parameters], dtype=dtype, device=device)
    flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).to(dtype)
                      for p in parameters] + [has, extras.reshape(-1).to(dtype)])
    dist.all_reduce(flat)
    n_extras = extras.numel()
    offset = 0
    for p, anyone in zip(parameters, flat[-n_extras - len(parameters):-n_extras].tolist()):
        n = p.numel()
        if anyone:
            p.grad = flat[offset:offset + n].view_as(p).to(p.dtype)  # a view of this step's fresh buffer
        offset += n
    return flat[-n_extras:].view_as(extras).to(extras.dtype)


# -- BatchNorm ------------------------------------------------------------------------------------
_plain_batch_norm = F.batch_norm


@contextmanager
def synced_batches() -> Iterator[None]:
    """Within this block, BatchNorm in training mode normalises with the statistics of all ranks' samples.

    Every BN module (``nn.BatchNorm*d``, timm's ``BatchNormAct2d``, ...) computes through
    ``torch.nn.functional.batch_norm``; the block routes that function to :func:`_synced_batch_norm`, so no
    module is replaced (a replacement would drop what a subclass adds, such as timm's fused activation).
    Only the sharded training step opens it: loops that every rank runs on the same data (a method's
    balanced fine-tuning, say) keep local statistics, or their BN gradients would be summed N times.
    In one process it changes nothing.
    """
    if world().size == 1:
        yield
        return
    F.batch_norm = _synced_batch_norm
    try:
        yield
    finally:
        F.batch_norm = _plain_batch_norm


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks whose gradient is the sum over ranks of the incoming gradients (every rank used it)."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        tensor = tensor.clone()
        dist.all_reduce(tensor)
        return tensor

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


def _synced_batch_norm(input: torch.Tensor, running_mean: torch.Tensor | None, running_var: torch.Tensor | None,
                       weight: torch.Tensor | None = None, bias: torch.Tensor | None = None, training: bool = False,
                       momentum: float = 0.1, eps: float = 1e-5) -> torch.Tensor:
    """``F.batch_norm`` whose batch statistics are those of the global batch (sums all-reduced, two passes)."""
    if not training:
        return _plain_batch_norm(input, running_mean, running_var, weight, bias, training, momentum, eps)
    dims = [0, *range(2, input.dim())]
    shape = [1, -1] + [1] * (input.dim() - 2)
    count = all_sum(torch.tensor(float(input.numel() // input.shape[1]), dtype=torch.float64,
                                 device=input.device)).item()
    mean = _AllReduceSum.apply(input.sum(dims)) / count
    centred = input - mean.view(shape)
    var = _AllReduceSum.apply((centred * centred).sum(dims)) / count
    out = centred * torch.rsqrt(var + eps).view(shape)
    if weight is not None:
        out = out * weight.view(shape)
    if bias is not None:
        out = out + bias.view(shape)
    with torch.no_grad():
        if running_mean is not None:
            running_mean.mul_(1 - momentum).add_(mean.detach().to(running_mean.dtype), alpha=momentum)
        if running_var is not None:
            unbiased = var.detach() * count / max(count - 1, 1)
            running_var.mul_(1 - momentum).add_(unbiased.to(running_var.dtype), alpha=momentum)
    return out
