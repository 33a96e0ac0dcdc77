"""Exception types. Every user-facing failure names the file or setting at fault."""

from __future__ import annotations

from pathlib import Path


class ScarceError(Exception):
    """Base class for errors scarce reports to users (the CLI prints them without a traceback)."""


class ConfigError(ScarceError):
    """A configuration value or option is wrong."""


class DataError(ScarceError):
    """A data file is missing, corrupt or inconsistent. The message names the file."""

    def __init__(self, path: str | Path | None, problem: str) -> None:
        self.path = None if path is None else Path(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}" if path is not None else problem)


class TrainingError(ScarceError):
    """Training cannot continue (e.g. a non-finite loss); the last checkpoint is kept."""
