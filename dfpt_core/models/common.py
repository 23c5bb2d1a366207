"""Weight initialisation shared by the CIFAR zoo (the schemes of the public definitions)."""

from __future__ import annotations

from torch import nn


def he_init(model: nn.Module, linear_std: float | None = None) -> None:
    """Conv: He normal with fan_out (= N(0, sqrt(2 / (k*k*out)))), bias 0; BN: weight 1, bias 0.

    Linear: N(0, linear_std) weights when `linear_std` is given (VGG, MobileNetV2), else
    PyTorch's default; bias 0.
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d | nn.GroupNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            if linear_std is not None:
                nn.init.normal_(m.weight, 0.0, linear_std)
            nn.init.zeros_(m.bias)
