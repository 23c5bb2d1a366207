"""DFPT-KD and DFPT-KDt (Li et al., arXiv 2506.18244): the student learns from the teacher's
original path and from a prompt path trained to stay both accurate and reachable.

One backward pass of the summed losses updates every part from its own objective only:
- prompt path (prompts, fusions, new head; + backbone copy in KDt):
    L_P = w_pt * T^2 KL(p_T || p_P) + w_ps * T^2 KL(p_S.detach() || p_P) [+ w_pce * CE(p_P, y)]
  (bidirectional supervision: the frozen teacher pulls it up, the detached student keeps it
  reachable; `supervision` selects both, teacher-only or student-only);
- student: L_S = w_ce * CE + w_kd * T^2 KL(p_T || p_S) + w_kdp * T^2 KL(p_P.detach() || p_S);
- the original path runs under no_grad and never changes.

Easy to hard (the paper, as summarised in the project's source): "the prompt path starts out
close to the student and gradually grows more demanding"; in its Fig. 3 the prompt path's
training accuracy improved only with both supervisions active. How the path starts depends on
the fusion variant and initialisation (`prompt.py`): with the literal reading ("concat" +
"standard", the default, chosen by measurement there) it starts away from the teacher and
climbs; with this project's identity start ("residual" + "zero") it starts as the teacher.
The trainer records per epoch the prompt path's top-1, true-class confidence, agreement with
and KL to the student and the teacher (`engine.metrics.evaluate`); `engine.probe.PathProbe`
records them every N steps. `prompt_teacher_warmup` (epochs; 0 = off, this project's default)
ramps the teacher's pull on the prompt path linearly from 0 (this
project's optional curriculum; the summary does not mention one).

Learning rates (this project's choice; the summary only says the KDt backbone fine-tunes "with a
small learning rate"): the prompt modules train at `prompt_lr` and the KDt backbone copy at
`backbone_lr`, absolute initial rates that follow the run's schedule, independent of the
student's rate (so a ShuffleNet/MobileNet student's 0.01 does not change them).

Controls as hyperparameters: the student learns from the original path only
(`prompt_kd_weight=0`), the prompt path only (`kd_weight=0`) or both (the default: 0.9 + 0.9, a
total distillation weight of 1.8; KD's matched control is `kd` with `kd_weight=1.8`).

Measured at cpu scale (scripts/dfpt_study.py, results/dfpt_study.json; resnet20 -> resnet8,
5 paired seeds, the epoch chosen on a validation split, 95 % CIs): DFPT-KD - KD at the matched
weight -0.54 points (-2.45 to +1.37, not shown); DFPT-KDt - DFPT-KD +1.03 (-0.25 to +2.31, not
shown); DFPT-KD - KD trained twice as long (about the same training time as DFPT-KD) -5.63
(-6.68 to -4.57): at 4 epochs more epochs buy more than the prompt path. The student learning
from the prompt path only: -4.58 (-6.01 to -3.16) against both paths; from the original path
only it is exactly KD.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..losses import kd_loss
from ..models.stages import StageSpec
from ..prompt import DualPathTeacher
from .base import DEFAULT_CONTEXT, Distiller, RunContext
from .registry import register

SUPERVISION = ("both", "teacher", "student")


class DFPTBase(Distiller):
    """What DFPT-KD and DFPT-KDt share: the losses above, the dual path teacher, the groups.

    The DualPathTeacher (`self.dual`) owns the teacher: it is registered once, as
    `dual.original`; `self.teachers` views it without registering it a second time, so the
    teacher stays frozen, in eval mode and reachable as `self.teacher`, and each of its tensors
    has one state-dict key. `spec=` gives a StageSpec for a teacher without `stage_spec`; the
    prompt blocks are sized for the run context's `input_size`.
    """

    finetune = False
    requires = ("teacher",)
    optional = ("spec",)  # a StageSpec for a teacher without `stage_spec`

    @dataclass(frozen=True)
    class Hparams:
        temperature: float = 4.0
        ce_weight: float = 0.1
        kd_weight: float = 0.9
        prompt_kd_weight: float = 0.9
        supervision: str = "both"
        prompt_teacher_weight: float = 1.0
        prompt_teacher_warmup: int = 0
        prompt_student_weight: float = 1.0
        prompt_ce_weight: float = 0.0
        prompt_temperature: float = 4.0
        positions: str | int | Sequence[int] = "all"
        r1: float = 4
        r2: float = 0.25
        kernels: Sequence[int] = (3, 5, 7)
        fusion: str = "concat"
        prompt_init: str | None = None  # None: the fusion's own (prompt.FUSION_INIT)
        head_init: str = "random"
        prompt_lr: float = 0.05
        backbone_lr: float = 0.005
        backbone_bn: str = "train"
        prompt_weight_decay: float | None = None

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        hp: Hparams | None = None,
        context: RunContext = DEFAULT_CONTEXT,
        *,
        spec: StageSpec | None = None,
    ):
        super().__init__(student, {"teacher": teacher}, hp, register_teachers=False)
        hp = self.hp
        supervision = hp.supervision
        if supervision not in SUPERVISION:
            raise ValueError(f"supervision must be one of {SUPERVISION}, got {supervision!r}")
        self.dual = DualPathTeacher(
            self.teachers["teacher"],
            positions=hp.positions,
            r1=hp.r1,
            r2=hp.r2,
            kernels=hp.kernels,
            fusion=hp.fusion,
            prompt_init=hp.prompt_init,
            head_init=hp.head_init,
            finetune=self.finetune,
            backbone_bn=hp.backbone_bn,
            spec=spec,
            input_size=context.input_size,
        )
        prompt_teacher_weight = hp.prompt_teacher_weight
        prompt_student_weight = hp.prompt_student_weight
        self.temperature, self.prompt_temperature = hp.temperature, hp.prompt_temperature
        self.ce_weight, self.kd_weight = hp.ce_weight, hp.kd_weight
        self.prompt_kd_weight = hp.prompt_kd_weight
        self.supervision = supervision
        self.prompt_teacher_weight = prompt_teacher_weight if supervision != "student" else 0.0
        self.prompt_teacher_warmup = hp.prompt_teacher_warmup
        self.prompt_student_weight = prompt_student_weight if supervision != "teacher" else 0.0
        self.prompt_ce_weight = hp.prompt_ce_weight
        self.prompt_lr, self.backbone_lr = hp.prompt_lr, hp.backbone_lr
        self.prompt_weight_decay = hp.prompt_weight_decay

    @property
    def metric_temperature(self) -> float:
        return self.temperature

    def forward_train(self, images: Tensor, targets: Tensor, epoch: int = 0):
        logits = self.student(images)
        paths = self.dual(images)
        t, tp = self.temperature, self.prompt_temperature
        losses = {
            "ce": self.ce_weight * F.cross_entropy(logits, targets),
            "kd": self.kd_weight * kd_loss(logits, paths.original, t),
            "kd_prompt": self.prompt_kd_weight * kd_loss(logits, paths.prompt.detach(), t),
        }
        if self.prompt_teacher_weight:
            ramp = (
                min((epoch + 1) / self.prompt_teacher_warmup, 1.0)
                if self.prompt_teacher_warmup
                else 1.0
            )
            losses["prompt_teacher"] = (
                ramp * self.prompt_teacher_weight * kd_loss(paths.prompt, paths.original, tp)
            )
        if self.prompt_student_weight:
            losses["prompt_student"] = self.prompt_student_weight * kd_loss(
                paths.prompt, logits.detach(), tp
            )
        if self.prompt_ce_weight:
            losses["prompt_ce"] = self.prompt_ce_weight * F.cross_entropy(paths.prompt, targets)
        return logits, losses

    @torch.no_grad()
    def eval_logits(self, images: Tensor) -> dict[str, Tensor]:
        paths = self.dual(images)
        return {"student": self.student(images), "teacher": paths.original, "prompt": paths.prompt}

    def extra_modules(self):
        yield from self.dual.prompt_modules()
        if self.dual.backbone is not None:
            yield self.dual.backbone

    def param_groups(self, base_lr: float, weight_decay: float) -> list[dict]:
        wd = weight_decay if self.prompt_weight_decay is None else self.prompt_weight_decay
        prompt = [p for m in self.dual.prompt_modules() for p in m.parameters()]
        groups = [
            {
                "name": "student",
                "params": list(self.student.parameters()),
                "lr": base_lr,
                "weight_decay": weight_decay,
            },
            {
                "name": "prompt",
                "params": prompt,
                "lr": self.prompt_lr,
                "weight_decay": wd,
            },
        ]
        if self.dual.backbone is not None:
            groups.append(
                {
                    "name": "backbone",
                    "params": [p for p in self.dual.backbone.parameters() if p.requires_grad],
                    "lr": self.backbone_lr,
                    "weight_decay": weight_decay,
                }
            )
        return groups


@register("dfpt_kd")
class DFPTKD(DFPTBase):
    """DFPT-KD: prompt blocks, fusion blocks and the new head train; the teacher's backbone is
    frozen (gradients flow through it to the prompts) and shared by both paths."""

    finetune = False


@register("dfpt_kdt")
class DFPTKDt(DFPTBase):
    """DFPT-KDt: as DFPT-KD, and the prompt path's copy of the backbone fine-tunes at
    `backbone_lr` (BatchNorm mode `backbone_bn`); the original path stays the exact teacher."""

    finetune = True
