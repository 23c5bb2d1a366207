"""MobileNetV2 (Sandler et al., 2018) at width 0.5 and expansion 6 for CIFAR: the "mobile_half"
student of the CRD/DKD papers, registered as MobileNetV2. Parameter names (conv1, blocks.i.j.conv,
conv2, classifier.0) follow the public RepDistiller/mdistiller definition."""

from __future__ import annotations

from torch import Tensor, nn

from .common import he_init
from .registry import register
from .stages import StageSpec, flatten

# (expansion, width at multiplier 1, repeats, first stride) per block group
SETTINGS = (
    (1, 16, 1, 1),
    (6, 24, 2, 1),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


def conv_bn_relu(cin: int, cout: int, kernel: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class InvertedResidual(nn.Module):
    """1x1 expand - 3x3 depthwise - 1x1 linear projection, residual when shapes allow."""

    def __init__(self, cin: int, cout: int, stride: int, expansion: int):
        super().__init__()
        hidden = cin * expansion
        self.use_res_connect = stride == 1 and cin == cout
        self.conv = nn.Sequential(
            nn.Conv2d(cin, hidden, 1, 1, 0, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, cout, 1, 1, 0, bias=False),
            nn.BatchNorm2d(cout),
        )

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv(x)
        return x + out if self.use_res_connect else out


class MobileNetV2(nn.Module):
    """Stride-2 stem (16 px on CIFAR), seven inverted-residual groups, 1x1 conv to 1280, pool,
    linear. Four stages end where the public feature taps are (16, 8, 4 and 2 px)."""

    stage_spec = StageSpec(
        stem=("conv1",),
        stages=(
            ("blocks.0", "blocks.1"),
            ("blocks.2",),
            ("blocks.3", "blocks.4"),
            ("blocks.5", "blocks.6"),
        ),
        head=("conv2", "avgpool", flatten, "classifier"),
    )

    def __init__(
        self, num_classes: int = 100, in_chans: int = 3, width: float = 0.5, expansion: int = 6
    ):
        super().__init__()
        cin = int(32 * width)
        self.conv1 = conv_bn_relu(in_chans, cin, 3, 2)
        groups = []
        for t, c, n, s in SETTINGS:
            t = expansion if t != 1 else 1
            cout = int(c * width)
            groups.append(
                nn.Sequential(
                    *(
                        InvertedResidual(cin if i == 0 else cout, cout, s if i == 0 else 1, t)
                        for i in range(n)
                    )
                )
            )
            cin = cout
        self.blocks = nn.ModuleList(groups)
        last = int(1280 * width) if width > 1.0 else 1280
        self.conv2 = conv_bn_relu(cin, last, 1, 1)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Linear(last, num_classes))
        he_init(self, linear_std=0.01)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv1(x)
        for group in self.blocks:
            x = group(x)
        return self.classifier(self.avgpool(self.conv2(x)).flatten(1))


@register("MobileNetV2")
def mobile_half(num_classes: int = 100, in_chans: int = 3) -> MobileNetV2:
    """MobileNetV2 at width 0.5, expansion 6 ("mobile_half")."""
    return MobileNetV2(num_classes, in_chans, width=0.5, expansion=6)
