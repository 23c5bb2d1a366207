"""DGKD (Son, Na, Choi & Hwang, "Densely Guided Knowledge Distillation using Multiple Teacher
Assistants", ICCV 2021): the teacher and every assistant teach the student at once, and each
mini-batch drops some of them at random ("stochastic DGKD").

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

KD_REDUCTIONS = ("sum", "mean")


@register("dgkd")
class DGKD(KDFamily):
    """L = ce_weight * CE + kd_weight * R_{g in kept} T^2 KL(p_g || p_S), the guides g being the
    teacher and every assistant (Son et al., ICCV 2021: dense guidance of the student by the
    teacher and all teacher assistants at once), R = sum (default) or mean.

    Stochastic DGKD: in every training step `drop_num` of the guides' KD terms are dropped,
    chosen uniformly at random without replacement, so `len(guides) - drop_num >= 1` guides always
    teach. The scheme and `drop_num=1` are the authors' code (wonchulSon/DGKD, `train.py`:
    `--drop-num` default 1, `loss_KD_list.remove(random.choice(loss_KD_list))` per dropped term,
    total `(1 - lambda) * L_CE + lambda * T^2 * sum(kept KD terms)`). Dropped guides are not run.
    The draw uses the global torch RNG (CPU generator, `torch.randperm`), which the trainer seeds
    and checkpoints, so runs are reproducible and resume exactly. `drop_num=0` keeps every guide.

    Weights: the reference code's defaults are lambda = 1 (no CE at all) and T = 5, with the
    B*C-averaged `nn.KLDivLoss()`; we keep the project's KD recipe instead (mdistiller `CFG.KD`:
    CE weight 0.1, KD weight 0.9 per guide, T = 4) so DGKD is comparable to `kd`/`takd`.
    `kd_reduction="sum"` adds the kept terms as the reference code does; "mean" averages them
    (then the KD term's size does not grow with the number of assistants).

    `eval_logits` reports "teacher" and "assistant<i>" for every assistant. Loss keys: "ce",
    "kd" (the reduced kept terms); `last_kept` holds the names of the guides kept in the most
    recent training step (for inspection only; not state).
    """

    requires = ("teacher", "assistants")

    @dataclass(frozen=True)
    class Hparams(KDRecipe):
        drop_num: int = 1
        kd_reduction: str = "sum"

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
            "dgkd",
            "trained teacher assistants that teach the student together with the teacher; in "
            "a TrainConfig: networks.assistants",
        )
        names = [f"assistant{i}" for i in range(len(assistants))]
        super().__init__(
            student, {"teacher": teacher, **dict(zip(names, assistants, strict=True))}, hp
        )
        hp = self.hp
        drop_num, kd_reduction = hp.drop_num, hp.kd_reduction
        self.guide_names = ("teacher", *names)
        n = len(self.guide_names)
        if isinstance(drop_num, bool) or not isinstance(drop_num, int) or not 0 <= drop_num < n:
            raise ValueError(
                f"drop_num must be an integer in [0, {n - 1}] with {n} guides (teacher + "
                f"{n - 1} assistants), so that at least one guide teaches; got {drop_num!r}"
            )
        if kd_reduction not in KD_REDUCTIONS:
            raise ValueError(f"kd_reduction must be one of {KD_REDUCTIONS}, got {kd_reduction!r}")
        self.drop_num, self.kd_reduction = drop_num, kd_reduction
        self.last_kept: tuple[str, ...] = ()

    def sample_kept(self) -> list[bool]:
        """One draw of the stochastic DGKD mask over `guide_names` (True = this guide teaches in
        this step): exactly `drop_num` guides dropped, uniformly, from the global torch RNG."""
        n = len(self.guide_names)
        if self.drop_num == 0:
            return [True] * n
        dropped = set(torch.randperm(n)[: self.drop_num].tolist())
        return [i not in dropped for i in range(n)]

    def forward_train(self, images: Tensor, targets: Tensor, epoch: int = 0):
        kept = [name for name, k in zip(self.guide_names, self.sample_kept(), strict=True) if k]
        guides = [self.teacher_logits(images, g) for g in kept]
        logits = self.student(images)
        terms = [kd_loss(logits, guide, self.temperature) for guide in guides]
        kd = torch.stack(terms).sum() if self.kd_reduction == "sum" else torch.stack(terms).mean()
        self.last_kept = tuple(kept)
        return logits, {
            "ce": self.ce_weight * F.cross_entropy(logits, targets),
            "kd": self.kd_weight * kd,
        }

    @torch.no_grad()
    def eval_logits(self, images: Tensor) -> dict[str, Tensor]:
        return {
            "student": self.student(images),
            **{g: self.teacher_logits(images, g) for g in self.guide_names},
        }
