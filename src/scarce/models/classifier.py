"""Classifiers whose class activation maps are exact.

Every model the CAM code works with is a :class:`CamModel`: it exposes the last feature map
(``features``), the class weight matrix (``class_weights``, C×D) and how logits follow from features.
Because the head is linear after pooling, the CAM of class c is exactly ``Σ_d W[c, d] · F[d]``.

- :class:`CamClassifier`: any timm backbone (output stride 16 where the model supports it) with a
  bias-free 1×1 classifier, trained on image-level labels. The CAM layer is the map the backbone's own
  ImageNet head pools (``feature_layer: head``, timm's ``forward_features``: for EfficientNets the 1×1
  ``conv_head`` + BN + activation, non-negative), or the last stage of ``features_only``
  (``feature_layer: last_stage``: for EfficientNets a linear bottleneck whose values are half negative).
  Non-negative features are what CAM's refinements assume: NWC and ReCAM's ``W_recam ⊙ W_cls`` read a
  weight's sign as "this feature is evidence for/against the class", and TAP thresholds at a fraction of
  the channel max; on signed features all three change meaning (docs/methods.md has the measurement).
- :class:`TimmHeadClassifier`: a complete pretrained timm classifier (e.g. ImageNet) whose own linear head
  gives the class weights; used by ``scarce localize``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from scarce.errors import ConfigError
from scarce.models.pooling import build_pooling
from scarce.models.weights import create_timm


def last_map(out: torch.Tensor | list[torch.Tensor] | tuple[torch.Tensor, ...]) -> torch.Tensor:
    """The backbone's output map: ``features_only`` models return a list of maps, ``forward_features`` one."""
    return out[-1] if isinstance(out, (list, tuple)) else out


def class_maps(weights: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """A linear head applied at every position, ``M[b, c] = Σ_d W[c, d] · F[b, d]``: (C, D), (B, D, h, w) → (B, C, h, w).

    The one place a weight matrix becomes maps: CAM, ReCAM's product weights, RIB's tuned head, OC-CSE's
    erasing map and LPCAM's prototype similarities all call it.
    """
    return torch.einsum("cd,bdhw->bchw", weights.to(features.dtype), features)


class CamModel(nn.Module):
    """Interface of the models CAM methods accept."""

    num_classes: int

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised images → (B, D, h, w) last feature map."""
        raise NotImplementedError

    @property
    def class_weights(self) -> torch.Tensor:
        """(C, D) weights mapping pooled features to logits."""
        raise NotImplementedError

    def logits_from_features(self, features: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.logits_from_features(self.features(images))

    def class_maps(self, features: torch.Tensor, clamp_negative_weights: bool = False) -> torch.Tensor:
        """Raw CAMs of all classes at once: (B, D, h, w) → (B, C, h, w). NWC clamps negative weights to 0."""
        weights = self.class_weights
        if clamp_negative_weights:
            weights = weights.clamp_min(0.0)
        return class_maps(weights, features)

    @property
    def mean_std(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Input normalisation the backbone was trained with."""
        raise NotImplementedError


@dataclass(frozen=True)
class ModelConfig:
    backbone: str = "tf_efficientnet_lite0"
    pretrained: str | None = "auto"
    output_stride: int | None = 16
    pooling: str = "gap"
    tap_tau: float = 0.05
    feature_layer: str = "head"  # "head": the map the ImageNet head pools; "last_stage": features_only's last map


class CamClassifier(CamModel):
    def __init__(self, backbone: nn.Module, feature_dim: int, num_classes: int, pooling: nn.Module,
                 mean_std: tuple[tuple[float, ...], tuple[float, ...]]) -> None:
        super().__init__()
        self.backbone = backbone
        self.pool = pooling
        self.classifier = nn.Conv2d(feature_dim, num_classes, kernel_size=1, bias=False)
        # Zero start: every logit is 0 and the loss starts at log 2 whatever the backbone's feature scale
        # (the un-activated bottleneck features of EfficientNets are large, and a Xavier head diverges early).
        nn.init.zeros_(self.classifier.weight)
        self.num_classes = num_classes
        self._mean_std = mean_std

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return last_map(self.backbone(images))

    @property
    def class_weights(self) -> torch.Tensor:
        return self.classifier.weight[:, :, 0, 0]

    def logits_from_features(self, features: torch.Tensor) -> torch.Tensor:
        return F.linear(self.pool(features), self.class_weights)

    @property
    def mean_std(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        return self._mean_std

    def parameter_groups(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """(backbone, head) parameters: the head is trained with a larger learning rate."""
        return list(self.backbone.parameters()), list(self.classifier.parameters())


def feature_module_name(model: "CamClassifier") -> str:
    """Name (in ``model.named_modules()``) of the module whose output is ``model.features``: the target
    layer a hook-based peer (torchcam, pytorch-grad-cam) needs to see the same map.

    Found by running the model once: the outermost module whose output is the feature tensor itself and
    not its own input (in-place activations, pooling-free ``global_pool`` and ``Identity`` heads pass their
    input through).
    """
    found: list[str] = []
    hooks = []
    outputs: dict[str, torch.Tensor] = {}

    def record(name: str):
        def hook(module: nn.Module, inputs: tuple, output: object) -> None:
            if isinstance(output, torch.Tensor) and not any(output is i for i in inputs):
                outputs[name] = output
                found.append(name)
        return hook

    for name, module in model.backbone.named_modules():
        if name:
            hooks.append(module.register_forward_hook(record("backbone." + name)))
    try:
        with torch.no_grad():
            features = model.features(torch.zeros(1, 3, 64, 64))
    finally:
        for handle in hooks:
            handle.remove()
    matches = [name for name in found if outputs[name] is features]
    if not matches:
        raise ConfigError(f"{type(model.backbone).__name__}: no single module outputs the CAM feature map")
    return matches[-1]  # hooks fire inner-first, so the last one is the outermost


FEATURE_LAYERS = ("head", "last_stage")


def build_classifier(cfg: ModelConfig, num_classes: int) -> CamClassifier:
    if cfg.feature_layer not in FEATURE_LAYERS:
        raise ConfigError(f"model.feature_layer must be one of {FEATURE_LAYERS}, got {cfg.feature_layer!r}")
    if cfg.feature_layer == "head":  # no pooling, no classifier: the model returns forward_features' map
        kwargs: dict[str, object] = {"num_classes": 0, "global_pool": ""}
    else:
        kwargs = {"features_only": True, "out_indices": (-1,)}
    if cfg.output_stride is not None:
        kwargs["output_stride"] = cfg.output_stride
    try:
        backbone = create_timm(cfg.backbone, cfg.pretrained, **kwargs)
    except (TypeError, AssertionError) as exc:
        if cfg.output_stride is None:
            raise
        # Some architectures (e.g. ViTs, ConvNeXt) do not take output_stride: say so instead of a timm traceback.
        raise ConfigError(f"{cfg.backbone} does not support output_stride={cfg.output_stride} ({exc}); set output_stride: null") from None
    feature_dim = backbone.num_features if cfg.feature_layer == "head" else backbone.feature_info.channels()[-1]
    data_cfg = getattr(backbone, "pretrained_cfg", None) or {}
    mean_std = (tuple(data_cfg.get("mean", (0.485, 0.456, 0.406))), tuple(data_cfg.get("std", (0.229, 0.224, 0.225))))
    return CamClassifier(backbone, feature_dim, num_classes, build_pooling(cfg.pooling, cfg.tap_tau), mean_std)


class TimmHeadClassifier(CamModel):
    """A full timm classifier (features → global pool → linear head) seen as a CAM model.

    The head's bias shifts every position equally, so it is left out of the maps (as in Zhou et al.).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        head = model.get_classifier()
        if not isinstance(head, nn.Linear):
            raise ConfigError(f"{type(model).__name__}: CAMs need a linear classifier head, found {type(head).__name__}")
        self.model = model
        self.num_classes = head.out_features
        cfg = getattr(model, "pretrained_cfg", None) or {}
        self._mean_std = (tuple(cfg.get("mean", (0.485, 0.456, 0.406))), tuple(cfg.get("std", (0.229, 0.224, 0.225))))

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(images)

    @property
    def class_weights(self) -> torch.Tensor:
        return self.model.get_classifier().weight

    def logits_from_features(self, features: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(features)

    @property
    def mean_std(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        return self._mean_std


def build_imagenet_classifier(name: str = "tf_efficientnet_lite0", pretrained: str | None = "auto") -> TimmHeadClassifier:
    return TimmHeadClassifier(create_timm(name, pretrained))
