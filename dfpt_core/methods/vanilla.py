"""Cross-entropy training (students alone, and teachers) and Hinton et al.'s KD (2015)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ..losses import kd_loss
from .base import Distiller
from .registry import register


@register("ce")
class CE(Distiller):
    """Plain cross-entropy on the labels: baselines, and how teachers are trained."""

    def __init__(self, student: nn.Module, *, label_smoothing: float = 0.0):
        super().__init__(student)
        self.label_smoothing = label_smoothing

    def forward_train(self, images: Tensor, targets: Tensor, epoch: int = 0):
        logits = self.student(images)
        return logits, {
            "ce": F.cross_entropy(logits, targets, label_smoothing=self.label_smoothing)
        }


@register("kd")
class KD(Distiller):
    """L = ce_weight * CE + kd_weight * T^2 KL(p_T || p_S) (Hinton et al., 2015, eq. 2-3).

    Defaults are the CIFAR-100 recipe of CRD/DKD (mdistiller configs/cifar100/kd.yaml):
    CE weight 0.1, KD weight 0.9, T = 4.
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        *,
        temperature: float = 4.0,
        ce_weight: float = 0.1,
        kd_weight: float = 0.9,
    ):
        super().__init__(student, {"teacher": teacher})
        self.temperature, self.ce_weight, self.kd_weight = temperature, ce_weight, kd_weight

    def forward_train(self, images: Tensor, targets: Tensor, epoch: int = 0):
        logits = self.student(images)
        teacher = self.teacher_logits(images)
        return logits, {
            "ce": self.ce_weight * F.cross_entropy(logits, targets),
            "kd": self.kd_weight * kd_loss(logits, teacher, self.temperature),
        }
