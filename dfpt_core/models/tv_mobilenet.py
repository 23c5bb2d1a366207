"""torchvision MobileNetV2 (width 1.0, ImageNet layout): the student of the paper's ImageNet
ResNet50 -> MobileNetV2 pair. (The CIFAR zoo's "MobileNetV2" is the width-0.5 mobile_half.)"""

from __future__ import annotations

from torch import nn
from torchvision import models as tvm

from .registry import register
from .stages import StageSpec, flatten, global_avg_pool

# Stages end where the resolution halves next (strides 4, 8, 16, 32 of the 224 px input).
TV_MOBILENET_V2_SPEC = StageSpec(
    stem=("features.0",),
    stages=(
        ("features.1", "features.2", "features.3"),
        ("features.4", "features.5", "features.6"),
        tuple(f"features.{i}" for i in range(7, 14)),
        tuple(f"features.{i}" for i in range(14, 18)),
    ),
    head=("features.18", global_avg_pool, flatten, "classifier"),
)


@register("tv_mobilenet_v2")
def tv_mobilenet_v2(num_classes: int = 1000, in_chans: int = 3) -> nn.Module:
    """torchvision mobilenet_v2 (randomly initialised) with a stage spec."""
    model = tvm.mobilenet_v2(weights=None, num_classes=num_classes)
    if in_chans != 3:
        old = model.features[0][0]
        model.features[0][0] = nn.Conv2d(in_chans, old.out_channels, 3, 2, 1, bias=False)
        nn.init.kaiming_normal_(model.features[0][0].weight, mode="fan_out")
    model.stage_spec = TV_MOBILENET_V2_SPEC
    return model
