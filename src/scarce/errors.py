"""Exception types. Every user-facing failure names the file or setting at fault.

They survive a trip through another process: pickling keeps their fields, and a DataLoader worker's error
reaches the caller with its own type and message (see :meth:`ScarceError.__init__`).
"""

from __future__ import annotations

from pathlib import Path

# PyTorch's DataLoader re-raises a worker's exception as ``type(exc)(text)``, where ``text`` is
# "Caught <Type> in DataLoader worker process N.\nOriginal Traceback ..." and ends with the line
# "<module>.<Type>: <message>" (``traceback.format_exception``).
_WORKER_PREFIX = "Caught "
_WORKER_TRACEBACK = "\nOriginal Traceback"


def _unwrap_worker_message(cls: type, message: str) -> str:
    """The original message of a DataLoader worker's exception, or ``message`` itself if it is not one."""
    if not (message.startswith(_WORKER_PREFIX) and _WORKER_TRACEBACK in message):
        return message
    marker = f"{cls.__module__}.{cls.__qualname__}: "
    for line in reversed(message.splitlines()):
        if line.startswith(marker):
            return line[len(marker):]
    return message


class ScarceError(Exception):
    """Base class for errors scarce reports to users (the CLI prints them without a traceback)."""

    def __init__(self, message: str = "") -> None:
        super().__init__(_unwrap_worker_message(type(self), str(message)))


class ConfigError(ScarceError):
    """A configuration value or option is wrong."""


class DataError(ScarceError):
    """A data file is missing, corrupt or inconsistent. The message names the file.

    ``DataError(path, problem)``; the one-argument form ``DataError(message)`` (path unknown) is what a
    re-raise that knows only the message, such as PyTorch's DataLoader, calls.
    """

    def __init__(self, path: str | Path | None, problem: str | None = None) -> None:
        if problem is None:  # DataError(message)
            path, problem = None, _unwrap_worker_message(type(self), str(path))
        self.path = None if path is None else Path(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}" if path is not None else problem)

    def __reduce__(self) -> tuple[type, tuple[Path | None, str]]:
        return type(self), (self.path, self.problem)


class TrainingError(ScarceError):
    """Training cannot continue (e.g. a non-finite loss); the last checkpoint is kept."""
