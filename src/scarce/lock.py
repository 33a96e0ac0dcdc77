"""One job per run folder: ``RUN/.lock`` names the job that writes there, and a second one is refused.

Two jobs in one folder would interleave checkpoints and per-image files. Rank 0 of a job creates the lock
(atomically, ``O_EXCL``) before any stage runs and removes it at the end. A lock is taken over only when its
holder is certainly gone: a process of this machine that no longer exists, or an earlier attempt of this
very torchrun job (same ``TORCHELASTIC_RUN_ID``: torchrun restarted the workers after a rank died). Any
other holder is named in the error, with how to remove a lock left by a machine that crashed.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from scarce.distributed import barrier, main_first, world
from scarce.errors import ScarceError

LOCK_NAME = ".lock"
_HELD: dict[Path, int] = {}  # folders this process holds, with how many nested users


def _holder() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(), "job": os.environ.get("TORCHELASTIC_RUN_ID"),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": " ".join(sys.argv)}


def _gone(holder: dict) -> bool:
    """Whether the holder certainly stopped writing (see the module docstring)."""
    me = _holder()
    if holder.get("job") and holder.get("job") == me["job"]:
        return True
    if holder.get("host") != me["host"]:
        return False
    try:
        os.kill(int(holder.get("pid", -1)), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, ValueError, OverflowError):
        return False
    return False


def _acquire(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                holder = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                holder = {}
            if holder and _gone(holder):
                path.unlink(missing_ok=True)
                continue
            who = (f"process {holder.get('pid')} on {holder.get('host')} since {holder.get('started')} "
                   f"({holder.get('command')})") if holder else "an unreadable lock"
            raise ScarceError(f"{path}: this run folder is in use by {who}; wait for that run to finish, or, if it "
                              f"is gone (its machine crashed), delete {path}") from None
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            json.dump(_holder(), file)
        return
    raise ScarceError(f"{path}: could not take over the lock of a stopped run; delete it and start again")


@contextmanager
def run_lock(folder: str | Path) -> Iterator[None]:
    """Hold ``folder/.lock`` for this job (rank 0 holds it for all ranks; nested use in one process is fine)."""
    path = (Path(folder) / LOCK_NAME).resolve()
    if path in _HELD:
        _HELD[path] += 1
    else:
        main_first(lambda: _acquire(path) if world().is_main else None)
        _HELD[path] = 1
    finished = False
    try:
        yield
        finished = True
    finally:
        _HELD[path] -= 1
        if not _HELD[path]:
            del _HELD[path]
            if finished:
                barrier()  # the other ranks' last files are written before the folder is free again
            if world().is_main:
                path.unlink(missing_ok=True)
