"""Wide ResNets (Zagoruyko & Komodakis, 2016) for CIFAR, pre-activation blocks: wrn_16_1,
wrn_16_2, wrn_40_1, wrn_40_2. Parameter names follow the public RepDistiller/mdistiller
definitions (block1.layer.0.convShortcut, ...) so their checkpoints load unchanged."""

from __future__ import annotations

from torch import Tensor, nn

from .common import he_init
from .registry import register
from .stages import StageSpec, flatten, global_avg_pool


class WideBasicBlock(nn.Module):
    """BN-ReLU-conv3x3-BN-ReLU-conv3x3 plus the input (1x1-projected when the width changes;
    the projection then reads the pre-activated input)."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride=1, padding=1, bias=False)
        self.equalInOut = cin == cout
        self.convShortcut = (
            None if self.equalInOut else nn.Conv2d(cin, cout, 1, stride=stride, bias=False)
        )

    def forward(self, x: Tensor) -> Tensor:
        act = self.relu1(self.bn1(x))
        out = self.conv2(self.relu2(self.bn2(self.conv1(act))))
        return out + (x if self.equalInOut else self.convShortcut(act))


class NetworkBlock(nn.Module):
    """A stage of `n` wide blocks (kept as a wrapper for the checkpoint names `blockK.layer.i`)."""

    def __init__(self, n: int, cin: int, cout: int, stride: int):
        super().__init__()
        self.layer = nn.Sequential(
            *(
                WideBasicBlock(cin if i == 0 else cout, cout, stride if i == 0 else 1)
                for i in range(n)
            )
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.layer(x)


class WideResNet(nn.Module):
    """conv3x3 stem, three wide stages at 32/16/8 px, BN-ReLU, global pooling, linear."""

    stage_spec = StageSpec(
        stem=("conv1",),
        stages=(("block1",), ("block2",), ("block3",)),
        head=("bn1", "relu", global_avg_pool, flatten, "fc"),
    )

    def __init__(self, depth: int, widen: int, num_classes: int = 100, in_chans: int = 3):
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"WRN depth must be 6n+4 (16, 22, 28, 40), got {depth}")
        n = (depth - 4) // 6
        widths = (16, 16 * widen, 32 * widen, 64 * widen)
        self.conv1 = nn.Conv2d(in_chans, widths[0], 3, stride=1, padding=1, bias=False)
        self.block1 = NetworkBlock(n, widths[0], widths[1], 1)
        self.block2 = NetworkBlock(n, widths[1], widths[2], 2)
        self.block3 = NetworkBlock(n, widths[2], widths[3], 2)
        self.bn1 = nn.BatchNorm2d(widths[3])
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(widths[3], num_classes)
        he_init(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.block3(self.block2(self.block1(self.conv1(x))))
        x = self.relu(self.bn1(x))
        return self.fc(global_avg_pool(x).flatten(1))


def _make(depth: int, widen: int):
    name = f"wrn_{depth}_{widen}"

    @register(name)
    def build(num_classes: int = 100, in_chans: int = 3) -> WideResNet:
        return WideResNet(depth, widen, num_classes, in_chans)

    build.__doc__ = f"{name}: Wide ResNet, depth {depth}, widening factor {widen}."
    return build


for _d, _w in ((16, 1), (16, 2), (40, 1), (40, 2)):
    _make(_d, _w)
