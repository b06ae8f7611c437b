"""Built-in small nets (``zoo:*``) for the offline demo: AlexNet-, VGG- and ResNet-style, from a cfg table.

They mirror torchvision's module layout (``features`` / ``avgpool`` / ``classifier`` for the plain
nets, ``conv1`` / ``layer1..4`` / ``fc`` for the ResNet) so the layer naming of
:mod:`sitegen.models.layers` applies unchanged, and are sized for 64–128 px inputs so a 2-core CPU
trains them on a few hundred images in tens of seconds. ReLUs are not in-place: hooks that keep a
conv's output must not see it overwritten. Initialization draws from the global torch RNG only, so
``torch.manual_seed`` makes a build deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from sitegen.models._registry import register_arch

# A plain-net cfg entry, in the spirit of torchvision's vgg ``cfgs``:
#   int                  3×3 conv, stride 1, padding 1 (VGG)
#   (out, k, stride, pad) any conv
#   "M"                  2×2 max-pool, stride 2 (VGG)
#   "P"                  3×3 max-pool, stride 2, overlapping (AlexNet)
CfgItem = int | str | tuple[int, int, int, int]


@dataclass(frozen=True, slots=True)
class PlainCfg:
    """An AlexNet/VGG-style net: conv trunk, adaptive average pool, three fully connected layers."""

    features: tuple[CfgItem, ...]
    pool: int  # AdaptiveAvgPool2d output side
    hidden: int  # fc6 / fc7 width
    batch_norm: bool = False
    dropout: float = 0.5


@dataclass(frozen=True, slots=True)
class ResNetCfg:
    """A ResNet-style net: a strided conv stem (no max-pool: small inputs), basic-block stages, GAP + fc."""

    stem: int
    stem_kernel: int
    stem_stride: int
    stages: tuple[tuple[int, int, int], ...]  # (channels, blocks, stride of the first block)


CFGS: dict[str, PlainCfg | ResNetCfg] = {
    # AlexNet at 64 px: 5 convs and 3 overlapping pools; conv3..conv5 without pooling between them
    "alexnet_small": PlainCfg(
        features=((32, 5, 2, 2), "P", (64, 5, 1, 2), "P", (96, 3, 1, 1), (96, 3, 1, 1), (64, 3, 1, 1), "P"),
        pool=3,
        hidden=256,
        dropout=0.3,
    ),
    # VGG: 5 blocks of two 3×3 convs (so fc layers are fc6..fc8 as in VGG-16/19); BN so it trains fast
    # from scratch on a CPU (torchvision's vgg*_bn layout); narrow: full-resolution conv pairs dominate
    "vgg_small": PlainCfg(
        features=(12, 12, "M", 24, 24, "M", 48, 48, "M", 64, 64, "M", 64, 64, "M"),
        pool=2,
        hidden=256,
        batch_norm=True,
        dropout=0.3,
    ),
    # ResNet-18 layout (4 stages of 2 basic blocks), narrow (16-32-48-64), a 5×5 stride-2 stem
    "resnet_small": ResNetCfg(
        stem=16, stem_kernel=5, stem_stride=2, stages=((16, 2, 1), (32, 2, 2), (48, 2, 2), (64, 2, 2))
    ),
}


def _make_features(cfg: PlainCfg) -> tuple[nn.Sequential, int]:
    layers: list[nn.Module] = []
    channels = 3
    for item in cfg.features:
        if isinstance(item, str):
            size = {"M": 2, "P": 3}[item]
            layers.append(nn.MaxPool2d(kernel_size=size, stride=2))
        else:
            out, k, stride, pad = (item, 3, 1, 1) if isinstance(item, int) else item
            layers.append(nn.Conv2d(channels, out, kernel_size=k, stride=stride, padding=pad))
            if cfg.batch_norm:
                layers.append(nn.BatchNorm2d(out))
            layers.append(nn.ReLU(inplace=False))
            channels = out
    return nn.Sequential(*layers), channels


class PlainNet(nn.Module):
    """AlexNet/VGG layout: ``features`` → ``avgpool`` → flatten → ``classifier`` (fc6, fc7, fc8)."""

    def __init__(self, cfg: PlainCfg, num_classes: int = 1000) -> None:
        super().__init__()
        self.features, channels = _make_features(cfg)
        self.avgpool = nn.AdaptiveAvgPool2d((cfg.pool, cfg.pool))
        self.classifier = nn.Sequential(
            nn.Dropout(p=cfg.dropout),
            nn.Linear(channels * cfg.pool * cfg.pool, cfg.hidden),
            nn.ReLU(inplace=False),
            nn.Dropout(p=cfg.dropout),
            nn.Linear(cfg.hidden, cfg.hidden),
            nn.ReLU(inplace=False),
            nn.Linear(cfg.hidden, num_classes),
        )
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)


class BasicBlock(nn.Module):
    """ResNet basic block (He et al. 2016) with its own ReLU modules, so each hook fires once per forward."""

    def __init__(self, in_channels: int, channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu1 = nn.ReLU(inplace=False)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, channels, 1, stride=stride, bias=False), nn.BatchNorm2d(channels)
            )
        self.relu2 = nn.ReLU(inplace=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + identity)


class ResNet(nn.Module):
    """torchvision ResNet layout: ``conv1``/``bn1``/``relu`` stem, ``layer1..N``, ``avgpool``, ``fc``."""

    def __init__(self, cfg: ResNetCfg, num_classes: int = 1000) -> None:
        super().__init__()
        k = cfg.stem_kernel
        self.conv1 = nn.Conv2d(3, cfg.stem, k, stride=cfg.stem_stride, padding=k // 2, bias=False)
        self.bn1 = nn.BatchNorm2d(cfg.stem)
        self.relu = nn.ReLU(inplace=False)
        channels = cfg.stem
        for i, (out, blocks, stride) in enumerate(cfg.stages, start=1):
            stage = [BasicBlock(channels, out, stride)] + [BasicBlock(out, out) for _ in range(blocks - 1)]
            self.add_module(f"layer{i}", nn.Sequential(*stage))
            channels = out
        self.num_stages = len(cfg.stages)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(channels, num_classes)
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        for i in range(1, self.num_stages + 1):
            x = getattr(self, f"layer{i}")(x)
        x = self.avgpool(x)
        return self.fc(torch.flatten(x, 1))


def _init_weights(net: nn.Module) -> None:
    # torchvision vgg/resnet init: He-normal convs, unit BN, zero biases
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    # torchvision's N(0, 0.01) for linears suits 4096-wide layers; 256 wide, it shrinks the signal 4-6x
    # per layer and the nets did not learn in 3 epochs (measured): He init for the hidden linears
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    for m in linears:
        if m is linears[-1]:
            nn.init.normal_(m.weight, 0, 0.01)  # near-uniform first predictions: loss starts at log(C)
        else:
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
        nn.init.zeros_(m.bias)


def _build(name: str, num_classes: int) -> nn.Module:
    cfg = CFGS[name]
    return PlainNet(cfg, num_classes) if isinstance(cfg, PlainCfg) else ResNet(cfg, num_classes)


@register_arch("alexnet_small")
def alexnet_small(*, num_classes: int = 1000) -> nn.Module:
    """AlexNet-style: conv1..conv5 (32-64-96-96-64), 3 max-pools, fc6/fc7 (256), fc8; for 64–128 px."""
    return _build("alexnet_small", num_classes)


@register_arch("vgg_small")
def vgg_small(*, num_classes: int = 1000) -> nn.Module:
    """VGG-style: 5 blocks of two 3×3 convs + BN (12-24-48-64-64), fc6/fc7 (256), fc8; for 64–128 px."""
    return _build("vgg_small", num_classes)


@register_arch("resnet_small")
def resnet_small(*, num_classes: int = 1000) -> nn.Module:
    """ResNet-style: 5×5/2 stem (16), four stages of two basic blocks (16-32-48-64), GAP, fc; 64–128 px."""
    return _build("resnet_small", num_classes)
