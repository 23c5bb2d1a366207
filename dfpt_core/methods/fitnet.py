"""Feature-KD: FitNets-style hints (Romero et al., ICLR 2015) at stage boundaries, in the form of
the CIFAR-10 capacity study (umutonuryasar/kd-capacity-gap, `src/distillation/feature_kd.py`).

The student's feature map at a stage boundary is mapped to the teacher's channel count by a
learnable 1x1 convolution (the "regressor" of FitNets) and matched to the teacher's map with
`dfpt_core.losses.feature_kd_loss` (MSE + cos_weight * cosine term). Boundaries come from the
stage interface, the same mechanism DFPT-KD inserts its prompt blocks at.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..losses import DEFAULT_FEATURE_COS_WEIGHT, feature_kd_loss
from ..models.stages import Stages
from .base import DEFAULT_CONTEXT, Distiller, RunContext
from .registry import register


def _parse_boundaries(boundaries, num_student: int, num_teacher: int) -> tuple[int, ...]:
    """Validated, sorted, de-duplicated boundary indices (0 = stem output, i = stage_i output)."""
    if isinstance(boundaries, int) and not isinstance(boundaries, bool):
        boundaries = (boundaries,)
    if not isinstance(boundaries, Sequence) or isinstance(boundaries, str) or not boundaries:
        raise ValueError(
            f"boundaries must be a non-empty list of stage boundary indices, got {boundaries!r}"
        )
    last = min(num_student, num_teacher)
    out = []
    for b in boundaries:
        if isinstance(b, bool) or not isinstance(b, int) or not 0 <= b <= last:
            raise ValueError(
                f"boundary {b!r} out of range: valid indices are 0 (stem output) .. {last} "
                f"(student has {num_student} stages, teacher {num_teacher})"
            )
        out.append(b)
    if len(set(out)) != len(out):
        raise ValueError(f"boundaries must not repeat, got {tuple(boundaries)}")
    return tuple(sorted(out))


def _features_upto(model: nn.Module, images: Tensor, last: int) -> list[Tensor]:
    """[stem out, stage_1 out, ..., stage_last out]: stops after the deepest tapped boundary."""
    stages = Stages(model)
    feats = [stages.stem(images)]
    for i in range(1, last + 1):
        feats.append(stages.stage(i, feats[-1]))
    return feats


@register("fitnet")
class FitNet(Distiller):
    """L = ce_weight * CE + hint_weight * feature_kd_loss([W_l * F_S^l], [F_T^l], cos_weight),
    summed over the tapped boundaries l (FitNets, Romero et al. 2015, Eq. 3: a learnable
    regressor W maps the student's hint layer to the teacher's guided layer, trained by L2).

    - `boundaries`: indices into `Stages(model).features(x)[0]` (0 = stem output, i = output of
      stage_i). Default `(2,)`, the output of the second stage ("third boundary" counting the
      stem), as mdistiller's `CFG.FITNET.HINT_LAYER = 2`; any subset, e.g. `(1, 2, 3)` for all
      stages of a CIFAR ResNet as in the capacity study.
    - Projections: one `nn.Conv2d(C_S, C_T, 1, bias=False)` per boundary, Xavier-uniform init,
      exactly the capacity study's (`feature_kd.py`). When spatial sizes differ,
      `feature_kd_loss` pools the larger map to the smaller one.
    - `hint_weight=100`: mdistiller `CFG.FITNET.LOSS.FEAT_WEIGHT`; `ce_weight=1`: mdistiller
      `CFG.FITNET.LOSS.CE_WEIGHT`; `cos_weight=0.5`: the capacity study's `feat_beta`
      (`dfpt_core.losses.DEFAULT_FEATURE_COS_WEIGHT`).
    - `clip_projections=True`: gradient clipping covers the projections as well as the student.
      `False` reproduces the capacity study's bug (projections outside the clipped set, see
      DESIGN.md); the projections still train (they stay in `param_groups`).
    - The run context's `input_size` (C, H, W) is only used to read the boundary shapes when
      building the projections (the run builder fills it from the dataset).

    Loss keys: "ce" and "hint" (weighted). The teacher's features are computed under no_grad,
    and only up to the deepest tapped boundary.
    """

    requires = ("teacher",)

    @dataclass(frozen=True)
    class Hparams:
        boundaries: Sequence[int] = (2,)
        hint_weight: float = 100.0
        ce_weight: float = 1.0
        cos_weight: float = DEFAULT_FEATURE_COS_WEIGHT
        clip_projections: bool = True

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        hp: Hparams | None = None,
        context: RunContext = DEFAULT_CONTEXT,
    ):
        super().__init__(student, {"teacher": teacher}, hp)
        hp, input_size = self.hp, context.input_size
        s_bounds = Stages(student).boundaries(input_size)
        t_bounds = Stages(self.teacher).boundaries(input_size)
        self.boundaries = _parse_boundaries(hp.boundaries, len(s_bounds) - 1, len(t_bounds) - 1)
        self.hint_weight, self.ce_weight = hp.hint_weight, hp.ce_weight
        self.cos_weight = hp.cos_weight
        self.clip_projections = bool(hp.clip_projections)
        self.input_size = tuple(input_size)
        projections = []
        for b in self.boundaries:
            conv = nn.Conv2d(s_bounds[b].channels, t_bounds[b].channels, kernel_size=1, bias=False)
            nn.init.xavier_uniform_(conv.weight)
            projections.append(conv)
        p = next(student.parameters(), None)
        self.projections = nn.ModuleList(projections).to(p.device if p is not None else "cpu")

    def forward_train(self, images: Tensor, targets: Tensor, epoch: int = 0):
        with torch.no_grad():
            teacher_feats = _features_upto(self.teacher, images, self.boundaries[-1])
        feats, logits = Stages(self.student).features(images)
        student_hints = [
            proj(feats[b]) for proj, b in zip(self.projections, self.boundaries, strict=True)
        ]
        teacher_hints = [teacher_feats[b] for b in self.boundaries]
        hint = feature_kd_loss(student_hints, teacher_hints, self.cos_weight)
        return logits, {
            "ce": self.ce_weight * F.cross_entropy(logits, targets),
            "hint": self.hint_weight * hint,
        }

    def extra_modules(self) -> Iterator[nn.Module]:
        yield self.projections

    def param_groups(self, base_lr: float, weight_decay: float) -> list[dict]:
        groups = super().param_groups(base_lr, weight_decay)
        for g in groups:
            if g["name"] == "extra":
                g["name"] = "projections"
        return groups

    def clip_parameters(self) -> list[nn.Parameter]:
        if self.clip_projections:
            return super().clip_parameters()
        return list(self.student.parameters())
