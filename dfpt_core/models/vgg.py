"""VGG with batch norm for CIFAR (Simonyan & Zisserman, 2015; fully connected layers replaced by
global pooling and one linear layer, as in CRD/DKD): vgg8, vgg11, vgg13, vgg16, vgg19. Parameter
names (block0..block4, classifier) follow the public RepDistiller/mdistiller definitions."""

from __future__ import annotations

from torch import Tensor, nn

from .common import he_init
from .registry import register
from .stages import StageSpec, flatten, relu

# Conv widths of the five blocks; a 2x2 max-pool separates blocks 0-3 (block3 and block4 both
# run at 4x4 on 32x32 inputs).
CONFIGS = {
    "vgg8": ((64,), (128,), (256,), (512,), (512,)),
    "vgg11": ((64,), (128,), (256, 256), (512, 512), (512, 512)),
    "vgg13": ((64, 64), (128, 128), (256, 256), (512, 512), (512, 512)),
    "vgg16": ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)),
    "vgg19": ((64, 64), (128, 128), (256,) * 4, (512,) * 4, (512,) * 4),
}


def conv_block(cin: int, widths: tuple[int, ...]) -> nn.Sequential:
    """conv3x3-BN-ReLU repeated, without the last ReLU (the network applies it after the block)."""
    layers: list[nn.Module] = []
    for w in widths:
        layers += [nn.Conv2d(cin, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
        cin = w
    return nn.Sequential(*layers[:-1])


class VGG(nn.Module):
    """block0 at 32 px, then pool+block at 16, 8 and 4 px, block4 at 4 px, global pool, linear."""

    stage_spec = StageSpec(
        stem=("block0", relu),
        stages=(
            ("pool0", "block1", relu),
            ("pool1", "block2", relu),
            ("pool2", "block3", relu),
            ("block4", relu),
        ),
        head=("pool4", flatten, "classifier"),
    )

    def __init__(self, widths, num_classes: int = 100, in_chans: int = 3):
        super().__init__()
        cins = (in_chans,) + tuple(w[-1] for w in widths[:-1])
        for i, (cin, w) in enumerate(zip(cins, widths, strict=True)):
            self.add_module(f"block{i}", conv_block(cin, w))
        self.pool0 = nn.MaxPool2d(2, 2)
        self.pool1 = nn.MaxPool2d(2, 2)
        self.pool2 = nn.MaxPool2d(2, 2)
        self.pool4 = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(widths[-1][-1], num_classes)
        he_init(self, linear_std=0.01)

    def forward(self, x: Tensor) -> Tensor:
        x = self.pool0(self.block0(x).relu())
        x = self.pool1(self.block1(x).relu())
        x = self.pool2(self.block2(x).relu())
        x = self.block4(self.block3(x).relu()).relu()
        return self.classifier(self.pool4(x).flatten(1))


def _make(name: str):
    @register(name)
    def build(num_classes: int = 100, in_chans: int = 3) -> VGG:
        return VGG(CONFIGS[name], num_classes, in_chans)

    build.__doc__ = f"{name}: VGG with batch norm, conv widths {CONFIGS[name]}."
    return build


for _name in CONFIGS:
    _make(_name)
