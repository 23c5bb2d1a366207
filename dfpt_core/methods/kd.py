"""Hinton, Vinyals & Dean's knowledge distillation ("Distilling the Knowledge in a Neural
Network", 2015)."""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from ..losses import kd_loss
from .base import DEFAULT_CONTEXT, Distiller, RunContext
from .checks import check_weights
from .registry import register


@dataclass(frozen=True)
class KDRecipe:
    """The project's KD recipe, mdistiller's `CFG.KD` (its CIFAR-100 configs, as in CRD/DKD):
    CE weight 0.1, KD weight 0.9, T = 4; the hyperparameters of `kd` and the start of those of
    the methods built on it (takd, dgkd, eskd, rco)."""

    temperature: float = 4.0
    ce_weight: float = 0.1
    kd_weight: float = 0.9


class KDFamily(Distiller):
    """Base of the methods whose loss is ce_weight * CE + kd_weight * T^2 KL(p_guide || p_S)
    for some guide network(s): the KD recipe's weights (checked >= 0) and temperature, which is
    also the temperature of the trainer's KD-decomposition metrics."""

    Hparams = KDRecipe

    def __init__(self, student: nn.Module, teachers: dict[str, nn.Module], hp=None):
        super().__init__(student, teachers, hp)
        check_weights(ce_weight=self.hp.ce_weight, kd_weight=self.hp.kd_weight)
        self.temperature = self.hp.temperature
        self.ce_weight, self.kd_weight = self.hp.ce_weight, self.hp.kd_weight

    @property
    def metric_temperature(self) -> float:
        return self.temperature


@register("kd")
class KD(KDFamily):
    """L = ce_weight * CE + kd_weight * T^2 KL(p_T || p_S) (Hinton et al., 2015, eq. 2-3).

    Defaults are the CIFAR-100 recipe of CRD/DKD (mdistiller configs/cifar100/kd.yaml):
    CE weight 0.1, KD weight 0.9, T = 4.
    """

    requires = ("teacher",)

    @dataclass(frozen=True)
    class Hparams(KDRecipe):
        pass

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        hp: Hparams | None = None,
        context: RunContext = DEFAULT_CONTEXT,
    ):
        super().__init__(student, {"teacher": teacher}, hp)

    def forward_train(self, images: Tensor, targets: Tensor, epoch: int = 0):
        teacher = self.teacher_logits(images)  # frozen networks first (see Distiller.forward_train)
        logits = self.student(images)
        return logits, {
            "ce": self.ce_weight * F.cross_entropy(logits, targets),
            "kd": self.kd_weight * kd_loss(logits, teacher, self.temperature),
        }
