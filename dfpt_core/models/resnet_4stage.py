"""Four-stage ResNets (He et al., 2016) with a CIFAR stem (3x3 stride-1 conv, no max-pool):
ResNet18, ResNet34, ResNet50 as in the public RepDistiller/mdistiller `resnetv2` definitions
(parameter names conv1, layerK.i.shortcut, linear)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .common import he_init
from .registry import register
from .stages import StageSpec, flatten, relu


def _shortcut(cin: int, cout: int, stride: int) -> nn.Sequential:
    if stride == 1 and cin == cout:
        return nn.Sequential()
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))


class Basic(nn.Module):
    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = _shortcut(cin, planes, stride)

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.shortcut = _shortcut(cin, planes * 4, stride)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn3(self.conv3(F.relu(self.bn2(self.conv2(out)))))
        return F.relu(out + self.shortcut(x))


class ResNet4Stage(nn.Module):
    """3x3 stem at 32 px, stages of width 64/128/256/512 (x expansion) at 32/16/8/4 px."""

    stage_spec = StageSpec(
        stem=("conv1", "bn1", relu),
        stages=(("layer1",), ("layer2",), ("layer3",), ("layer4",)),
        head=("avgpool", flatten, "linear"),
    )

    def __init__(self, block, blocks, num_classes: int = 100, in_chans: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, 64, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        cin = 64
        for i, (planes, n) in enumerate(zip((64, 128, 256, 512), blocks, strict=True), start=1):
            stride = 1 if i == 1 else 2
            units = []
            for j in range(n):
                units.append(block(cin, planes, stride if j == 0 else 1))
                cin = planes * block.expansion
            self.add_module(f"layer{i}", nn.Sequential(*units))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(cin, num_classes)
        he_init(self)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.linear(self.avgpool(x).flatten(1))


@register("ResNet18")
def resnet18_cifar(num_classes: int = 100, in_chans: int = 3) -> ResNet4Stage:
    """ResNet-18 (basic blocks 2-2-2-2) with the CIFAR stem."""
    return ResNet4Stage(Basic, (2, 2, 2, 2), num_classes, in_chans)


@register("ResNet34")
def resnet34_cifar(num_classes: int = 100, in_chans: int = 3) -> ResNet4Stage:
    """ResNet-34 (basic blocks 3-4-6-3) with the CIFAR stem."""
    return ResNet4Stage(Basic, (3, 4, 6, 3), num_classes, in_chans)


@register("ResNet50")
def resnet50_cifar(num_classes: int = 100, in_chans: int = 3) -> ResNet4Stage:
    """ResNet-50 (bottleneck blocks 3-4-6-3) with the CIFAR stem."""
    return ResNet4Stage(Bottleneck, (3, 4, 6, 3), num_classes, in_chans)
