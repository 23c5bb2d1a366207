"""Cross-entropy training: students alone (the baselines), and how teachers are trained."""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from .base import DEFAULT_CONTEXT, Distiller, RunContext
from .registry import register


@register("ce")
class CE(Distiller):
    """Plain cross-entropy on the labels: baselines, and how teachers are trained."""

    requires = ()

    @dataclass(frozen=True)
    class Hparams:
        label_smoothing: float = 0.0

    def __init__(
        self, student: nn.Module, hp: Hparams | None = None, context: RunContext = DEFAULT_CONTEXT
    ):
        super().__init__(student, hp=hp)
        self.label_smoothing = self.hp.label_smoothing

    def forward_train(self, images: Tensor, targets: Tensor, epoch: int = 0):
        logits = self.student(images)
        return logits, {
            "ce": F.cross_entropy(logits, targets, label_smoothing=self.label_smoothing)
        }
