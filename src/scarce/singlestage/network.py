"""One network for single-stage WSSS: a shared timm encoder, a CAM branch and a DeepLabV3+ decoder branch.

As RecurSeed's ``RSEPM`` (``core/networks.py``): the encoder's last map C5 feeds both a bias-free 1×1
classifier (the CAM ``M̂_cam``; logits = GAP of the CAM, so the pooled score of class c is the mean of its
map) and the ASPP of a DeepLabV3+ decoder whose low-level skip is the stride-4 map C2 (``M̂_dec``, C + 1
classes with background first). The official network is a ResNet-50 at output stride 16; here the encoder
is scarce's classifier (:func:`scarce.models.build_classifier`: any timm backbone, the map its ImageNet head
pools as C5, output stride 16), so the CAM branch is exactly the classifier the rest of scarce trains.

The multi-level features (C1–C5, timm's ``feature_info``) are read by forward hooks during the one forward
pass: the decoder takes C2 from them, and RecurSeed's SCG correlates all of them (detached).

The decoder is segmentation-models-pytorch's ``DeepLabV3PlusDecoder`` (separable ASPP at rates 6, 12, 18
for output stride 16, 48-channel low-level projection, as :mod:`scarce.segmentation.model`), followed by a
1×1 classifier; its logits are resized to the input bilinearly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from scarce.errors import ConfigError
from scarce.models.classifier import CamClassifier, ModelConfig, build_classifier
from scarce.refinement.scg import level_modules


@dataclass(frozen=True)
class DecoderConfig:
    channels: int = 256  # RSEPM's feature_size
    atrous_rates: tuple[int, ...] = (6, 12, 18)  # DeepLabV3+ at output stride 16
    low_level: int = 1  # index into the encoder's feature_info of the skip map (C2, stride 4)


@dataclass(frozen=True)
class NetworkConfig:
    encoder: ModelConfig = field(default_factory=ModelConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)


class SingleStageOutput(NamedTuple):
    cams: torch.Tensor  # (B, C, h, w) raw class activation maps at the encoder's stride
    logits: torch.Tensor  # (B, C) GAP of the CAMs
    seg_logits: torch.Tensor  # (B, C + 1, H, W) decoder logits at the input size, background first
    levels: list[torch.Tensor]  # C1–C5 as the encoder computed them (with gradients)


class SingleStageNet(nn.Module):
    """``forward(images)`` → :class:`SingleStageOutput`; trained by :func:`scarce.training.train_classifier`
    (it has the classifier's ``mean_std`` and ``parameter_groups``)."""

    def __init__(self, classifier: CamClassifier, cfg: DecoderConfig, num_classes: int) -> None:
        super().__init__()
        from segmentation_models_pytorch.base import SegmentationHead
        from segmentation_models_pytorch.decoders.deeplabv3.decoder import DeepLabV3PlusDecoder

        self.classifier = classifier
        self.num_classes = num_classes
        info = classifier.backbone.feature_info
        if not 0 <= cfg.low_level < len(info) or info[cfg.low_level]["reduction"] != 4:
            raise ConfigError(f"network.decoder.low_level {cfg.low_level} must name the encoder's stride-4 map; its "
                              f"levels have strides {[level['reduction'] for level in info]}")
        self.low_level = cfg.low_level
        self._level_modules = level_modules(classifier.backbone, None)  # not registered: they live in the backbone
        self._captured: list[torch.Tensor] = []
        for module in self._level_modules:
            module.register_forward_hook(lambda _m, _i, out: self._captured.append(out))
        # smp's decoder reads features[2] (stride 4) and features[-1] (the ASPP input); the others are unused
        channels = [0, 0, info[cfg.low_level]["num_chs"], classifier.classifier.in_channels]
        self.decoder = DeepLabV3PlusDecoder(encoder_channels=channels, encoder_depth=5, out_channels=cfg.channels,
                                            atrous_rates=tuple(cfg.atrous_rates), output_stride=16,
                                            aspp_separable=True, aspp_dropout=0.5)
        self.segmentation_head = SegmentationHead(cfg.channels, num_classes + 1, kernel_size=1)
        self.input_multiple = 16  # the decoder's ×4 upsampling of the stride-16 map must meet the stride-4 map

    def forward(self, images: torch.Tensor) -> SingleStageOutput:
        self._captured.clear()
        features = self.classifier.features(images)
        levels, self._captured = list(self._captured), []
        cams = self.classifier.class_maps(features)
        logits = self.classifier.logits_from_features(features)
        fused = self.decoder([images, images, levels[self.low_level], features])
        seg = F.interpolate(self.segmentation_head(fused), size=images.shape[-2:], mode="bilinear",
                            align_corners=False)
        return SingleStageOutput(cams, logits, seg, levels)

    @property
    def mean_std(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        return self.classifier.mean_std

    def parameter_groups(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """(encoder, CAM classifier + decoder): the second trains at ``head_lr_mult`` × the encoder's rate."""
        head = [*self.classifier.classifier.parameters(), *self.decoder.parameters(),
                *self.segmentation_head.parameters()]
        return list(self.classifier.backbone.parameters()), head


class DecoderView(nn.Module):
    """The decoder branch alone (logits), shaped like a :class:`scarce.segmentation.Segmenter` so that
    :func:`scarce.segmentation.predict_probabilities` runs multi-scale + flip inference on it. It also keeps
    σ(GAP) of every view it runs, for inference's class filter (:meth:`take_class_scores`)."""

    def __init__(self, net: SingleStageNet) -> None:
        super().__init__()
        self.net = net
        self.input_multiple = net.input_multiple
        self.class_scores: list[torch.Tensor] = []

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        out = self.net(images)
        self.class_scores.append(torch.sigmoid(out.logits))
        return out.seg_logits

    def take_class_scores(self) -> torch.Tensor:
        """(C,) mean classification score over the views run since the last call."""
        scores, self.class_scores = torch.cat(self.class_scores).mean(dim=0), []
        return scores

    @property
    def mean_std(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        return self.net.mean_std


def build_network(cfg: NetworkConfig, num_classes: int) -> SingleStageNet:
    if cfg.encoder.output_stride != 16:
        raise ConfigError(f"network.encoder.output_stride must be 16 (the DeepLabV3+ decoder), got "
                          f"{cfg.encoder.output_stride}")
    if cfg.encoder.feature_layer != "head" or cfg.encoder.pooling != "gap":
        raise ConfigError("network.encoder: RecurSeed's CAM branch is GAP over the head map (feature_layer: head, "
                          "pooling: gap)")
    return SingleStageNet(build_classifier(cfg.encoder, num_classes), cfg.decoder, num_classes)
