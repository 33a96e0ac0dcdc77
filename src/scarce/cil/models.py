"""Backbones (small ConvNet for 28×28, ResNet-32 for 32×32, ResNet-18 for ImageNet-size) and expandable
heads (linear, LUCIR's cosine classifier, PODNet's local-similarity classifier).

Every backbone returns ``(features, maps)``: the pooled feature vector and the output of each stage (for
POD-spatial). ``last_relu=False`` drops the final ReLU, as LUCIR and PODNet do before a cosine classifier.
Each backbone is a sequence of ``n_levels`` levels (``forward_level``), the unit AANets aggregates.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from scarce.errors import ConfigError


def forward_levels(backbone: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Run a backbone level by level: ``(global-average-pooled features, output of every level)``."""
    maps = []
    for level in range(backbone.n_levels):
        x = backbone.forward_level(level, x)
        maps.append(x)
    return x.mean(dim=(2, 3)), maps


class ConvNet(nn.Module):
    """Three conv-BN-ReLU blocks (max-pooled between them) and global average pooling."""

    def __init__(self, in_channels: int = 1, widths: tuple[int, ...] = (16, 32, 64), last_relu: bool = True) -> None:
        super().__init__()
        blocks, c = [], in_channels
        for i, w in enumerate(widths):
            layers: list[nn.Module] = [nn.Conv2d(c, w, 3, padding=1, bias=False), nn.BatchNorm2d(w)]
            if last_relu or i < len(widths) - 1:
                layers.append(nn.ReLU(inplace=True))
            blocks.append(nn.Sequential(*layers))
            c = w
        self.stages = nn.ModuleList(blocks)
        self.out_dim = c

    @property
    def n_levels(self) -> int:
        return len(self.stages)

    def forward_level(self, level: int, x: torch.Tensor) -> torch.Tensor:
        """One level (max-pool then stage, the first without pooling): AANets aggregates per level."""
        return self.stages[level](F.max_pool2d(x, 2) if level else x)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        return forward_levels(self, x)


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int = 1, relu: bool = True) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu = relu
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out)) + self.shortcut(x)
        return F.relu(out) if self.relu else out


class ResNet(nn.Module):
    """ResNet of basic blocks. ``cifar=True``: 3×3 stem (ResNet-32: 3 stages × 5 blocks, 16/32/64 channels,
    64-d features); otherwise the 7×7/stride-2 stem and max-pool of ImageNet ResNets (ResNet-18)."""

    def __init__(self, blocks: tuple[int, ...], widths: tuple[int, ...], in_channels: int = 3, cifar: bool = True,
                 last_relu: bool = True) -> None:
        super().__init__()
        w0 = widths[0]
        if cifar:
            self.stem = nn.Sequential(nn.Conv2d(in_channels, w0, 3, 1, 1, bias=False), nn.BatchNorm2d(w0), nn.ReLU(inplace=True))
        else:
            self.stem = nn.Sequential(nn.Conv2d(in_channels, w0, 7, 2, 3, bias=False), nn.BatchNorm2d(w0),
                                      nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1))
        stages, c = [], w0
        for s, (n, w) in enumerate(zip(blocks, widths)):
            layers = []
            for b in range(n):
                last = s == len(blocks) - 1 and b == n - 1
                layers.append(BasicBlock(c, w, stride=2 if (b == 0 and s > 0) else 1, relu=last_relu or not last))
                c = w
            stages.append(nn.Sequential(*layers))
        self.stages = nn.ModuleList(stages)
        self.out_dim = c
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    @property
    def n_levels(self) -> int:
        return len(self.stages)

    def forward_level(self, level: int, x: torch.Tensor) -> torch.Tensor:
        """One residual level; the stem belongs to the first (as in the AANets code's first group)."""
        return self.stages[level](self.stem(x) if level == 0 else x)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        return forward_levels(self, x)


def build_backbone(name: str, in_channels: int, image_size: int, last_relu: bool = True) -> nn.Module:
    """``auto`` picks the ConvNet for ≤ 28 px, ResNet-32 for ≤ 32 px and ResNet-18 above."""
    if name == "auto":
        name = "convnet" if image_size <= 28 else "resnet32" if image_size <= 32 else "resnet18"
    if name == "convnet":
        return ConvNet(in_channels, last_relu=last_relu)
    if name == "resnet32":
        return ResNet((5, 5, 5), (16, 32, 64), in_channels, cifar=True, last_relu=last_relu)
    if name == "resnet18":
        return ResNet((2, 2, 2, 2), (64, 128, 256, 512), in_channels, cifar=False, last_relu=last_relu)
    if name == "resnet18_cifar":
        return ResNet((2, 2, 2, 2), (64, 128, 256, 512), in_channels, cifar=True, last_relu=last_relu)
    raise ConfigError(f"model.backbone: unknown backbone {name!r}; known: auto, convnet, resnet32, resnet18, resnet18_cifar")


# --- heads ------------------------------------------------------------------------------------------

class _BlockHead(nn.Module):
    """A head made of one parameter block per phase, so that old blocks can be frozen or sized on load."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.blocks = nn.ParameterList()

    @property
    def block_sizes(self) -> list[int]:
        return [b.shape[0] // self.rows_per_class for b in self.blocks]

    rows_per_class = 1

    @property
    def n_classes(self) -> int:
        return sum(self.block_sizes)

    def _new_block(self, n: int) -> torch.Tensor:
        w = torch.empty(n * self.rows_per_class, self.dim)
        nn.init.kaiming_uniform_(w, a=math.sqrt(5))
        return w

    def expand(self, n: int, init: torch.Tensor | None = None) -> None:
        w = self._new_block(n) if init is None else init.detach().clone().reshape(n * self.rows_per_class, self.dim)
        ref = next(iter(self.parameters()), None)
        self.blocks.append(nn.Parameter(w.to(ref.device) if ref is not None else w))

    def resize(self, sizes: list[int]) -> None:
        """Recreate blocks of the given sizes (before ``load_state_dict``)."""
        self.blocks = nn.ParameterList()
        for n in sizes:
            self.expand(n)

    def weight(self) -> torch.Tensor:
        return torch.cat(list(self.blocks), dim=0)

    @torch.no_grad()
    def mean_weight_norm(self) -> torch.Tensor:
        """Mean L2 norm of the existing weight rows: LUCIR and PODNet scale imprinted weights to it."""
        return self.weight().norm(dim=1).mean()


class LinearHead(_BlockHead):
    def __init__(self, dim: int) -> None:
        super().__init__(dim)
        self.biases = nn.ParameterList()

    def expand(self, n: int, init: torch.Tensor | None = None) -> None:
        super().expand(n, init)
        bound = 1 / math.sqrt(self.dim)
        self.biases.append(nn.Parameter(torch.empty(n).uniform_(-bound, bound).to(self.blocks[-1].device)))

    def resize(self, sizes: list[int]) -> None:
        self.biases = nn.ParameterList()
        super().resize(sizes)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return F.linear(f, self.weight(), torch.cat(list(self.biases)))


class CosineHead(_BlockHead):
    """LUCIR: ``sigma * cos(w_c, f)`` with a learnable scale ``sigma`` shared by all classes (initialised to 1)."""

    def __init__(self, dim: int) -> None:
        super().__init__(dim)
        self.sigma = nn.Parameter(torch.ones(1))

    def cosine(self, f: torch.Tensor) -> torch.Tensor:
        return F.linear(F.normalize(f, dim=1), F.normalize(self.weight(), dim=1))

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.sigma * self.cosine(f)


class LSCHead(_BlockHead):
    """PODNet's local-similarity classifier: K proxies per class; the class similarity is the softmax-weighted
    mean of the proxy similarities, scaled by a learned factor (initialised to 1). The proxy similarity is
    ``-||w - f||^2`` of L2-normalised vectors (= 2 cos - 2, PODNet's ``neg_stable_cosine_distance``).

    The scale is kept ≥ 1: with the NCA margin, a freely learned scale is driven negative early in training
    (flipping the sign of every logit satisfies the margin) and the classifier collapses."""

    def __init__(self, dim: int, proxies: int = 10) -> None:
        self.rows_per_class = proxies
        super().__init__(dim)
        self.scale = nn.Parameter(torch.ones(1))

    def similarity(self, f: torch.Tensor) -> torch.Tensor:
        cos = F.linear(F.normalize(f, dim=1), F.normalize(self.weight(), dim=1))
        sim = (2 * cos - 2).view(f.shape[0], -1, self.rows_per_class)
        return (F.softmax(sim, dim=-1) * sim).sum(dim=-1)

    @property
    def effective_scale(self) -> torch.Tensor:
        return self.scale.clamp(min=1.0)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.effective_scale * self.similarity(f)


class IncrementalNet(nn.Module):
    """Backbone plus an expandable head; ``forward`` returns logits, features and stage maps."""

    def __init__(self, backbone: nn.Module, head: _BlockHead) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor | list[torch.Tensor]]:
        features, maps = self.backbone(x)
        return {"logits": self.head(features), "features": features, "maps": maps}
