"""What produced a number: library versions and threads, recorded beside every reported metric.

Training on the CPU is bit-reproducible for a fixed seed only within one set of library versions (kernels,
resampling and random streams change between releases), so a figure without them cannot be re-checked.
"""

from __future__ import annotations

import platform
from importlib import metadata
from typing import Any

LIBRARIES = ("torch", "torchvision", "timm", "numpy", "scikit-image", "pillow", "segmentation-models-pytorch", "pydensecrf2")


def environment() -> dict[str, Any]:
    """Python, the versions of the libraries that shape the numbers, and torch's CPU thread count."""
    import torch

    versions: dict[str, str | None] = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {"python": platform.python_version(), "libraries": versions, "torch_threads": torch.get_num_threads()}
