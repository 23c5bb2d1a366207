"""ShuffleNet V1 (Zhang et al., 2018; groups 3) and V2 (Ma et al., 2018; width 1.0) for CIFAR, the
cross-family students of the CRD/DKD/DFPT-KD tables. Parameter names follow the public
RepDistiller/mdistiller definitions (ShuffleV1, ShuffleV2)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .registry import register
from .stages import StageSpec, flatten, global_avg_pool, relu


def channel_shuffle(x: Tensor, groups: int) -> Tensor:
    """[N, g*c, H, W] -> interleave the g groups' channels."""
    n, ch, h, w = x.shape
    return x.view(n, groups, ch // groups, h, w).transpose(1, 2).reshape(n, ch, h, w)


class ShuffleV1Unit(nn.Module):
    """Grouped 1x1 - shuffle - depthwise 3x3 - grouped 1x1; stride 2 concatenates an average-
    pooled shortcut, stride 1 adds the input."""

    def __init__(self, cin: int, cout: int, stride: int, groups: int):
        super().__init__()
        self.stride = stride
        mid = cout // 4
        self.first_groups = 1 if cin == 24 else groups
        self.conv1 = nn.Conv2d(cin, mid, 1, groups=self.first_groups, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, mid, 3, stride=stride, padding=1, groups=mid, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, cout, 1, groups=groups, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)

    def forward(self, x: Tensor) -> Tensor:
        out = channel_shuffle(F.relu(self.bn1(self.conv1(x))), self.first_groups)
        out = self.bn3(self.conv3(F.relu(self.bn2(self.conv2(out)))))
        if self.stride == 2:
            return F.relu(torch.cat([out, F.avg_pool2d(x, 3, stride=2, padding=1)], 1))
        return F.relu(out + x)


class ShuffleNetV1(nn.Module):
    """1x1 stem (24 ch, 32 px), three stages at 16/8/4 px (240/480/960 ch), pool, linear."""

    stage_spec = StageSpec(
        stem=("conv1", "bn1", relu),
        stages=(("layer1",), ("layer2",), ("layer3",)),
        head=(global_avg_pool, flatten, "linear"),
    )

    def __init__(
        self,
        num_classes: int = 100,
        in_chans: int = 3,
        widths=(240, 480, 960),
        blocks=(4, 8, 4),
        groups: int = 3,
    ):
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, 24, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(24)
        cin = 24
        for i, (w, n) in enumerate(zip(widths, blocks, strict=True), start=1):
            # the stride-2 unit concatenates its input, so its branch makes only w - cin channels
            units = [ShuffleV1Unit(cin, w - cin, 2, groups)]
            units += [ShuffleV1Unit(w, w, 1, groups) for _ in range(n - 1)]
            self.add_module(f"layer{i}", nn.Sequential(*units))
            cin = w
        self.linear = nn.Linear(widths[-1], num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.linear(global_avg_pool(x).flatten(1))


class ShuffleV2Unit(nn.Module):
    """Split channels in half, transform one half (1x1 - dw3x3 - 1x1), concatenate, shuffle."""

    def __init__(self, channels: int):
        super().__init__()
        half = channels // 2
        self.conv1 = nn.Conv2d(half, half, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(half)
        self.conv2 = nn.Conv2d(half, half, 3, padding=1, groups=half, bias=False)
        self.bn2 = nn.BatchNorm2d(half)
        self.conv3 = nn.Conv2d(half, half, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(half)

    def forward(self, x: Tensor) -> Tensor:
        keep, work = x.chunk(2, dim=1)
        work = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(work)))))
        work = F.relu(self.bn3(self.conv3(work)))
        return channel_shuffle(torch.cat([keep, work], 1), 2)


class ShuffleV2Down(nn.Module):
    """Stride-2 unit: two branches (dw3x3-1x1 and 1x1-dw3x3-1x1), concatenated and shuffled."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        mid = cout // 2
        self.conv1 = nn.Conv2d(cin, cin, 3, stride=2, padding=1, groups=cin, bias=False)
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv2 = nn.Conv2d(cin, mid, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(cin, mid, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(mid)
        self.conv4 = nn.Conv2d(mid, mid, 3, stride=2, padding=1, groups=mid, bias=False)
        self.bn4 = nn.BatchNorm2d(mid)
        self.conv5 = nn.Conv2d(mid, mid, 1, bias=False)
        self.bn5 = nn.BatchNorm2d(mid)

    def forward(self, x: Tensor) -> Tensor:
        left = F.relu(self.bn2(self.conv2(self.bn1(self.conv1(x)))))
        right = self.bn4(self.conv4(F.relu(self.bn3(self.conv3(x)))))
        right = F.relu(self.bn5(self.conv5(right)))
        return channel_shuffle(torch.cat([left, right], 1), 2)


class ShuffleNetV2(nn.Module):
    """1x1 stem (24 ch), three stages at 16/8/4 px (116/232/464 ch), 1x1 conv to 1024, linear."""

    stage_spec = StageSpec(
        stem=("conv1", "bn1", relu),
        stages=(("layer1",), ("layer2",), ("layer3",)),
        head=("conv2", "bn2", relu, global_avg_pool, flatten, "linear"),
    )

    def __init__(
        self,
        num_classes: int = 100,
        in_chans: int = 3,
        widths=(116, 232, 464, 1024),
        blocks=(3, 7, 3),
    ):
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, 24, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(24)
        cin = 24
        for i, (w, n) in enumerate(zip(widths[:3], blocks, strict=True), start=1):
            units = [ShuffleV2Down(cin, w)] + [ShuffleV2Unit(w) for _ in range(n)]
            self.add_module(f"layer{i}", nn.Sequential(*units))
            cin = w
        self.conv2 = nn.Conv2d(widths[2], widths[3], 1, bias=False)
        self.bn2 = nn.BatchNorm2d(widths[3])
        self.linear = nn.Linear(widths[3], num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return self.linear(global_avg_pool(x).flatten(1))


@register("ShuffleV1")
def shuffle_v1(num_classes: int = 100, in_chans: int = 3) -> ShuffleNetV1:
    """ShuffleNet V1, groups 3, widths 240/480/960."""
    return ShuffleNetV1(num_classes, in_chans)


@register("ShuffleV2")
def shuffle_v2(num_classes: int = 100, in_chans: int = 3) -> ShuffleNetV2:
    """ShuffleNet V2 at width 1.0, widths 116/232/464, 1024-channel head."""
    return ShuffleNetV2(num_classes, in_chans)
