"""CIFAR ResNets of He et al. (2016), three stages of 6n+2 layers: resnet8 .. resnet110, and the
4x-wide resnet8x4 / resnet32x4 used as CRD/DKD teachers and students. Parameter names follow the
public RepDistiller/mdistiller definitions so their CIFAR-100 checkpoints load unchanged."""

from __future__ import annotations

from torch import Tensor, nn

from .common import he_init
from .registry import register
from .stages import StageSpec, flatten


def conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN plus the (projected) input, then ReLU."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = conv3x3(cin, cout, stride)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(cout, cout)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(cout),
            )

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(out + shortcut)


class ResNetCifar(nn.Module):
    """conv3x3 stem, three stages at 32/16/8 px, global average pooling, linear classifier."""

    stage_spec = StageSpec(
        stem=("conv1", "bn1", "relu"),
        stages=(("layer1",), ("layer2",), ("layer3",)),
        head=("avgpool", flatten, "fc"),
    )

    def __init__(
        self,
        depth: int,
        widths: tuple[int, int, int, int],
        num_classes: int = 100,
        in_chans: int = 3,
    ):
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"depth must be 6n+2 (8, 14, 20, 32, 44, 56, 110), got {depth}")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_chans, widths[0], kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._stage(widths[0], widths[1], n, stride=1)
        self.layer2 = self._stage(widths[1], widths[2], n, stride=2)
        self.layer3 = self._stage(widths[2], widths[3], n, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[3], num_classes)
        he_init(self)

    @staticmethod
    def _stage(cin: int, cout: int, n: int, stride: int) -> nn.Sequential:
        return nn.Sequential(
            *(BasicBlock(cin if i == 0 else cout, cout, stride if i == 0 else 1) for i in range(n))
        )

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.avgpool(x).flatten(1))


_SLIM = (16, 16, 32, 64)
_X4 = (32, 64, 128, 256)


def scaled_widths(widths: tuple[int, ...], width: float) -> tuple[int, ...]:
    """Channel widths times `width` (rounded, at least 1): this project's knob for students of
    the same depth and smaller or larger width; width 1 is the public definition."""
    if not width > 0:
        raise ValueError(f"width must be > 0, got {width}")
    return tuple(max(1, round(w * width)) for w in widths)


def _make(name: str, depth: int, widths: tuple[int, int, int, int]):
    @register(name)
    def build(num_classes: int = 100, in_chans: int = 3, width: float = 1.0) -> ResNetCifar:
        return ResNetCifar(depth, scaled_widths(widths, width), num_classes, in_chans)

    build.__doc__ = f"{name}: CIFAR ResNet, depth {depth}, widths {widths} (times `width`)."
    return build


for _depth in (8, 14, 20, 32, 44, 56, 110):
    _make(f"resnet{_depth}", _depth, _SLIM)
_make("resnet8x4", 8, _X4)
_make("resnet32x4", 32, _X4)
