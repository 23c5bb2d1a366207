"""ESKD (Cho & Hariharan, "On the Efficacy of Knowledge Distillation", ICCV 2019): distil from an
early-stopped teacher checkpoint, optionally switching the KD term off part-way through.

The schedule is a pure function of the (0-based) epoch, which the trainer passes to every
`forward_train`; no schedule state is stored, so a resumed run makes the same choice as an
uninterrupted one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from ..losses import kd_loss
from .base import DEFAULT_CONTEXT, RunContext
from .checks import check_weights, is_int
from .kd import KDFamily, KDRecipe
from .registry import register


@register("eskd")
class ESKD(KDFamily):
    """Early-stopped KD: L = ce_weight * CE + kd_weight * T^2 KL(p_T || p_S) as `kd`, where the
    teacher T IS an early-stopped checkpoint of the teacher's training (Cho & Hariharan, ICCV
    2019, Sec. 5: stopping the teacher's training early mitigates the capacity mismatch). Pass
    that checkpoint as `teacher` (in a TrainConfig: `teacher_checkpoint` pointing at an early
    epoch's file); nothing in the loss differs from `kd`.

    `stop_epoch`: from this (0-based) epoch on, the KD term is switched off and the student
    trains on the labels alone with weight `ce_weight_after_stop` (default 1.0, plain CE
    training), the paper's early termination of the distillation term; the teacher is then not
    run at all and "kd" is reported as exactly 0. Default None: KD for the whole run.

    Defaults are the project's KD recipe (mdistiller `CFG.KD`): CE weight 0.1, KD weight 0.9,
    T = 4. Loss keys: "ce", "kd".
    """

    requires = ("teacher",)

    @dataclass(frozen=True)
    class Hparams(KDRecipe):
        stop_epoch: int | None = None
        ce_weight_after_stop: float = 1.0

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        hp: Hparams | None = None,
        context: RunContext = DEFAULT_CONTEXT,
    ):
        super().__init__(student, {"teacher": teacher}, hp)
        hp = self.hp
        stop_epoch = hp.stop_epoch
        if stop_epoch is not None and (not is_int(stop_epoch) or stop_epoch < 0):
            raise ValueError(f"stop_epoch must be None or an epoch >= 0, got {stop_epoch!r}")
        check_weights(ce_weight_after_stop=hp.ce_weight_after_stop)
        self.stop_epoch, self.ce_weight_after_stop = stop_epoch, hp.ce_weight_after_stop

    def kd_active(self, epoch: int) -> bool:
        """Whether the KD term is on in (0-based) `epoch`."""
        return self.stop_epoch is None or epoch < self.stop_epoch

    def forward_train(self, images: Tensor, targets: Tensor, epoch: int = 0):
        if not self.kd_active(epoch):
            logits = self.student(images)
            ce = self.ce_weight_after_stop * F.cross_entropy(logits, targets)
            return logits, {"ce": ce, "kd": logits.new_zeros(())}
        teacher = self.teacher_logits(images)
        logits = self.student(images)
        ce = F.cross_entropy(logits, targets)
        return logits, {
            "ce": self.ce_weight * ce,
            "kd": self.kd_weight * kd_loss(logits, teacher, self.temperature),
        }
