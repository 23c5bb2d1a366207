"""torchvision ResNets with a choice of stem. On 32x32 inputs the ImageNet stem (7x7 stride-2
conv + 3x3 stride-2 max-pool) shrinks the map to 8x8 before the first stage; the CIFAR stem
(3x3 stride-1 conv, no max-pool) keeps 32x32, which the CIFAR-10 capacity study found worth over
5 points of accuracy."""

from __future__ import annotations

from torch import nn
from torchvision import models as tvm

from .registry import register
from .resnet_cifar import scaled_widths
from .stages import StageSpec, flatten

STEMS = ("cifar", "imagenet")

TV_RESNET_SPEC = StageSpec(
    stem=("conv1", "bn1", "relu", "maxpool"),
    stages=(("layer1",), ("layer2",), ("layer3",), ("layer4",)),
    head=("avgpool", flatten, "fc"),
)


def tv_resnet(
    arch: str, num_classes: int = 100, in_chans: int = 3, stem: str = "cifar", width: float = 1.0
):
    """torchvision `arch` (randomly initialised) with the chosen stem and a stage spec; `width`
    multiplies the channels of the stem and of every stage (this project's knob, as for the
    CIFAR ResNets; width 1 is torchvision's definition)."""
    if stem not in STEMS:
        raise ValueError(f"stem must be one of {STEMS}, got {stem!r}")
    model = getattr(tvm, arch)(weights=None, num_classes=num_classes)
    if width != 1:
        narrow(model, width, num_classes)
    planes = model.bn1.num_features
    if stem == "cifar":
        model.conv1 = nn.Conv2d(in_chans, planes, kernel_size=3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
    elif in_chans != 3 or width != 1:
        model.conv1 = nn.Conv2d(in_chans, planes, kernel_size=7, stride=2, padding=3, bias=False)
    if stem == "cifar" or in_chans != 3 or width != 1:
        nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    model.stage_spec = TV_RESNET_SPEC
    return model


def narrow(model: tvm.ResNet, width: float, num_classes: int) -> None:
    """Rebuild the stem's normalisation, the four stages and the classifier of a torchvision
    ResNet with `width` times the channels, through torchvision's own `_make_layer` (same blocks
    and depths; stage 1 at stride 1, the others at stride 2), initialised as torchvision does."""
    stem_planes, *stage_planes = scaled_widths((64, 64, 128, 256, 512), width)
    stages = [getattr(model, f"layer{i}") for i in range(1, 5)]
    block = type(stages[0][0])
    model.inplanes = stem_planes
    model.bn1 = nn.BatchNorm2d(stem_planes)
    for i, (planes, stage) in enumerate(zip(stage_planes, stages, strict=True), start=1):
        setattr(
            model, f"layer{i}", model._make_layer(block, planes, len(stage), 1 if i == 1 else 2)
        )
    model.fc = nn.Linear(stage_planes[-1] * block.expansion, num_classes)
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")


def _make(arch: str):
    @register(f"tv_{arch}")
    def build(
        num_classes: int = 100, in_chans: int = 3, stem: str = "cifar", width: float = 1.0
    ) -> nn.Module:
        return tv_resnet(arch, num_classes, in_chans, stem, width)

    build.__doc__ = f"torchvision {arch} with stem='cifar' (default) or 'imagenet', times `width`."
    return build


for _arch in ("resnet18", "resnet34", "resnet50"):
    _make(_arch)
