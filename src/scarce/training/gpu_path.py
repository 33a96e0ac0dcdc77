"""The GPU path of every trainer (docs/scaling.md): autocast, fp16's gradient scaler, memory format, pinned copies.

One :class:`GPUPath` per training run, built from the config's ``device``, ``amp``, ``channels_last`` and
``pin_memory``. With the defaults (``amp: none``, both flags off) every method is the identity or exactly the
plain call it replaces (``scaler.step`` is ``optimizer.step``), so CPU results do not change.

``amp: bf16`` keeps fp32's exponent range, so its gradients need no scaling. ``amp: fp16`` does: its smallest
normal number is 6e-5, so small gradients would flush to zero. The loss is multiplied by a scale before the
backward pass and the gradients divided by it before the optimiser step; a step whose gradients overflow is
skipped and the scale halved, and it doubles after a run of good steps (torch's ``GradScaler``). The scale
therefore evolves with training: it belongs in a checkpoint, or a resumed run would skip other steps than the
uninterrupted one.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from scarce.errors import ConfigError

AMP_DTYPES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class GPUPath:
    """How a trainer runs on ``device``: ``amp`` (none | bf16 | fp16), ``channels_last`` (NHWC convolutions,
    faster on recent GPUs), ``pin_memory`` (page-locked host batches copied without blocking; CUDA only)."""

    def __init__(self, device: torch.device, amp: str = "none", channels_last: bool = False,
                 pin_memory: bool = False) -> None:
        if amp not in AMP_DTYPES:
            raise ConfigError(f"train.amp must be one of {', '.join(AMP_DTYPES)}, got {amp!r}")
        self.device, self.amp, self.channels_last = device, amp, channels_last
        self.pin = pin_memory and device.type == "cuda"
        self.scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")

    def autocast(self) -> torch.autocast:
        """The forward pass's (and loss's) autocast; disabled for ``amp: none``."""
        return torch.autocast(self.device.type, dtype=AMP_DTYPES[self.amp] or torch.bfloat16,
                              enabled=self.amp != "none")

    def scale(self, loss: torch.Tensor) -> torch.Tensor:
        """The loss to differentiate: times fp16's scale, ``loss`` itself otherwise."""
        return self.scaler.scale(loss)

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """``optimizer.step()`` on unscaled gradients (fp16: skipped when they overflow), then the scale's update."""
        self.scaler.step(optimizer)
        self.scaler.update()

    def model(self, module: nn.Module) -> nn.Module:
        """``module`` with its 4-D weights in the channels-last layout when asked (in place)."""
        return module.to(memory_format=torch.channels_last) if self.channels_last else module

    def batch(self, tensor: torch.Tensor) -> torch.Tensor:
        """A host tensor on the device, pinned first when asked so that the copy need not block."""
        if self.pin:
            tensor = tensor.pin_memory()  # a tensor already pinned (by a DataLoader) is returned as is
        return tensor.to(self.device, non_blocking=self.pin)

    def images(self, images: torch.Tensor) -> torch.Tensor:
        """A host image batch on the device, channels-last when asked (4-D batches, N×C×H×W)."""
        images = self.batch(images)
        if self.channels_last and images.dim() == 4:
            images = images.contiguous(memory_format=torch.channels_last)
        return images

    def state_dict(self) -> dict[str, Any]:
        """The gradient scaler's state (empty unless fp16), for checkpoints."""
        return self.scaler.state_dict()

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        """Restore a checkpoint's scaler; a checkpoint of another precision (no scaler state) leaves it fresh."""
        if self.scaler.is_enabled() and state:
            self.scaler.load_state_dict(state)
