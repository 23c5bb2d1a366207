"""TAKD (Mirzadeh et al., "Improved Knowledge Distillation via Teacher Assistant", AAAI 2020):
bridge a capacity gap with intermediate-size networks, teacher -> assistant -> student, one KD
run per step of the chain (the chain as run configurations:
`dfpt_core.run.recipes.takd_stage_configs`).

Assistants are networks, not hyperparameters: the method requires them (`requires`), and they
are frozen and kept in eval mode in `self.teachers` like the teacher.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..losses import kd_loss
from .base import DEFAULT_CONTEXT, RunContext
from .checks import network_list
from .kd import KDFamily, KDRecipe
from .registry import register


@register("takd")
class TAKD(KDFamily):
    """Second (and later) stage of TAKD: L = ce_weight * CE + kd_weight * T^2 KL(p_A || p_S),
    KD from the last assistant A of the chain teacher -> assistants[0] -> ... -> assistants[-1]
    (Mirzadeh et al., AAAI 2020, Eq. 3: L = (1 - lambda) L_CE + lambda L_KD).

    The paper does not fix lambda and T: its code tunes them per run (imirzadeh/Teacher-Assistant-
    Knowledge-Distillation, `search_space.json`: lambda in 0.05..1.0, T in {1, 2, 5, 10, 15, 20}).
    The defaults are therefore the project's KD recipe (mdistiller `CFG.KD`, as `kd`): CE weight
    0.1 (= 1 - lambda), KD weight 0.9 (= lambda), T = 4. (The reference code's `nn.KLDivLoss()`
    also divides by the number of classes; `kd_loss` does not, see `dfpt_core.losses`.)

    `teacher` is the original teacher: not used by the loss, only reported by `eval_logits` as
    "teacher" (gap metrics), next to "assistant" (the network the student learns from).
    `assistants=[ta]` (or a longer chain) is required; each assistant was trained in an earlier
    stage (see `takd_stage_configs`). Loss keys: "ce", "kd".
    """

    requires = ("teacher", "assistants")

    @dataclass(frozen=True)
    class Hparams(KDRecipe):
        pass

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        assistants: Sequence[nn.Module] | None = None,
        hp: Hparams | None = None,
        context: RunContext = DEFAULT_CONTEXT,
    ):
        assistants = network_list(
            assistants,
            "assistants",
            "takd",
            "trained teacher assistants, the student learns from the last one; in a "
            "TrainConfig: networks.assistants, see takd_stage_configs",
        )
        names = [f"assistant{i}" for i in range(len(assistants))]
        super().__init__(
            student, {"teacher": teacher, **dict(zip(names, assistants, strict=True))}, hp
        )
        self.assistant_names = tuple(names)

    @property
    def assistant(self) -> nn.Module:
        """The assistant the student learns from (the last of the chain)."""
        return self.teachers[self.assistant_names[-1]]

    def forward_train(self, images: Tensor, targets: Tensor, epoch: int = 0):
        guide = self.teacher_logits(images, self.assistant_names[-1])
        logits = self.student(images)
        return logits, {
            "ce": self.ce_weight * F.cross_entropy(logits, targets),
            "kd": self.kd_weight * kd_loss(logits, guide, self.temperature),
        }

    @torch.no_grad()
    def eval_logits(self, images: Tensor) -> dict[str, Tensor]:
        return {
            "student": self.student(images),
            "teacher": self.teacher_logits(images),
            "assistant": self.teacher_logits(images, self.assistant_names[-1]),
        }
