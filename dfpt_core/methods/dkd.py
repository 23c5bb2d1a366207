"""Decoupled Knowledge Distillation (Zhao, Cui, Song, Qiu & Liang, CVPR 2022): classical KD split
into a target-class part (TCKD) and a non-target part (NCKD) that are weighted independently.

The losses themselves live in `dfpt_core.losses` (`dkd_loss`, `tckd`, `nckd`); this module adds
the training-side parts: the linear warm-up of the DKD term and the published per-pair beta.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from ..losses import dkd_loss
from .base import DEFAULT_CONTEXT, Distiller, RunContext
from .registry import register

#: beta (the NCKD weight) of the published CIFAR-100 runs, per (teacher, student) pair in zoo
#: names: mdistiller's `configs/cifar100/dkd/*.yaml` (res56_res20 and res110_res32: BETA 2.0;
#: vgg13_vgg8, vgg13_mv2, wrn40_2_wrn_16_2, wrn40_2_wrn_40_1: BETA 6.0). Every other pair of
#: those configs (resnet32x4 -> resnet8x4 / ShuffleV1 / ShuffleV2, wrn_40_2 -> ShuffleV1,
#: ResNet50 -> MobileNetV2) keeps the default `CFG.DKD.BETA = 8.0`.
DKD_BETA: dict[tuple[str, str], float] = {
    ("resnet56", "resnet20"): 2.0,
    ("resnet110", "resnet32"): 2.0,
    ("vgg13", "vgg8"): 6.0,
    ("vgg13", "MobileNetV2"): 6.0,
    ("wrn_40_2", "wrn_16_2"): 6.0,
    ("wrn_40_2", "wrn_40_1"): 6.0,
}

#: beta for every pair not in `DKD_BETA` (mdistiller `CFG.DKD.BETA`, the paper's CIFAR-100 value).
DEFAULT_DKD_BETA = 8.0
#: mdistiller's `CFG.DKD.WARMUP`: epochs of the published 240-epoch CIFAR-100 schedule
DEFAULT_DKD_WARMUP = 20
PUBLISHED_EPOCHS = 240


def dkd_beta(teacher_name: str, student_name: str) -> float:
    """The published DKD beta for a CIFAR-100 (teacher, student) pair, e.g.
    `dkd_beta("resnet56", "resnet20") == 2.0`; 8.0 for pairs without a tuned value. Use it in a
    config as `method_args: {beta: dkd_beta(teacher, student)}`."""
    return DKD_BETA.get((teacher_name, student_name), DEFAULT_DKD_BETA)


def dkd_recipe(teacher_name: str, student_name: str, epochs: int) -> dict:
    """DKD's arguments beyond its defaults for a run of `epochs` on a (teacher, student) pair:
    the published warm-up (20 of 240 epochs) scaled to the run's length (at least 1 epoch), and
    the pair's published beta (`dkd_beta`). Values equal to the defaults are left out, so a
    240-epoch run of an untuned pair gets {}."""
    args = {}
    warmup = max(1, round(DEFAULT_DKD_WARMUP * epochs / PUBLISHED_EPOCHS))
    if warmup != DEFAULT_DKD_WARMUP:
        args["warmup"] = warmup
    if dkd_beta(teacher_name, student_name) != DEFAULT_DKD_BETA:
        args["beta"] = dkd_beta(teacher_name, student_name)
    return args


@register("dkd")
class DKD(Distiller):
    """L = ce_weight * CE + min((epoch + 1) / warmup, 1) * (alpha * TCKD + beta * NCKD), both KD
    parts at temperature T (Zhao et al., CVPR 2022, Eq. 7: DKD = alpha TCKD + beta NCKD).

    Loss keys: "ce" (weighted CE) and "dkd" (the warmed-up alpha TCKD + beta NCKD as one term;
    `dfpt_core.losses.tckd` / `nckd` give the parts for plots).

    Defaults are mdistiller's `CFG.DKD` (engine/cfg.py), the paper's CIFAR-100 setting:
    alpha 1.0, beta 8.0, T 4.0, CE weight 1.0, warmup 20. beta is tuned per pair in the published
    configs: use `dkd_beta(teacher, student)`. The warm-up is mdistiller's
    `min(epoch / warmup, 1)` with its 1-based epoch; the trainer passes 0-based epochs, hence
    `epoch + 1` here, so the factor is 1/warmup in the first epoch and 1 from epoch `warmup - 1`
    (0-based) on. `warmup=0` disables the warm-up.
    """

    requires = ("teacher",)

    @dataclass(frozen=True)
    class Hparams:
        alpha: float = 1.0
        beta: float = DEFAULT_DKD_BETA
        temperature: float = 4.0
        ce_weight: float = 1.0
        warmup: int = DEFAULT_DKD_WARMUP

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        hp: Hparams | None = None,
        context: RunContext = DEFAULT_CONTEXT,
    ):
        super().__init__(student, {"teacher": teacher}, hp)
        hp = self.hp
        alpha, beta, ce_weight, warmup = hp.alpha, hp.beta, hp.ce_weight, hp.warmup
        if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
            raise ValueError(f"warmup must be a whole number of epochs >= 0, got {warmup!r}")
        if alpha < 0 or beta < 0 or ce_weight < 0:
            raise ValueError(
                f"alpha, beta and ce_weight must be >= 0, got {alpha=}, {beta=}, {ce_weight=}"
            )
        self.alpha, self.beta, self.temperature = alpha, beta, hp.temperature
        self.ce_weight, self.warmup = ce_weight, warmup

    @property
    def metric_temperature(self) -> float:
        return self.temperature

    def warmup_factor(self, epoch: int) -> float:
        """Weight of the DKD term in (0-based) `epoch`: min((epoch + 1) / warmup, 1)."""
        if self.warmup == 0:
            return 1.0
        return min((epoch + 1) / self.warmup, 1.0)

    def forward_train(self, images: Tensor, targets: Tensor, epoch: int = 0):
        teacher = self.teacher_logits(images)
        logits = self.student(images)
        dkd = dkd_loss(logits, teacher, targets, self.alpha, self.beta, self.temperature)
        return logits, {
            "ce": self.ce_weight * F.cross_entropy(logits, targets),
            "dkd": self.warmup_factor(epoch) * dkd,
        }
