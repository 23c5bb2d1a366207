"""RCO (Jin, Peng, Wu, Liu, Liu, Liang, Yan & Hu, "Knowledge Distillation via Route Constrained
Optimization", ICCV 2019): the student follows the teacher's route, distilling from a sequence of
teacher checkpoints ("anchor points") from early to converged.

The schedule is a pure function of the (0-based) epoch, which the trainer passes to every
`forward_train` and `on_epoch_start`; no schedule state is stored, so a resumed run makes the
same choice as an uninterrupted one.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..losses import kd_loss
from .base import DEFAULT_CONTEXT, RunContext
from .checks import is_int, network_list
from .kd import KDFamily, KDRecipe
from .registry import register


def equal_interval_switches(num_anchors: int, total_epochs: int) -> tuple[int, ...]:
    """0-based epochs at which the student moves to the next anchor when `total_epochs` are
    split into `num_anchors` (near-)equal intervals: k * total_epochs // num_anchors."""
    if num_anchors < 1 or total_epochs < num_anchors:
        raise ValueError(
            f"cannot split {total_epochs} epochs into {num_anchors} anchor intervals "
            f"(need the run's epochs >= number of anchors)"
        )
    return tuple(k * total_epochs // num_anchors for k in range(1, num_anchors))


@register("rco")
class RCO(KDFamily):
    """Route-constrained KD: L = ce_weight * CE + kd_weight * T^2 KL(p_A(epoch) || p_S), where
    A(epoch) is the current anchor of the route [anchors[0], ..., anchors[-1], teacher] (Jin et
    al., ICCV 2019, Sec. 3: the student is supervised by anchor points taken, in order, from the
    teacher's optimisation route instead of by the converged teacher alone).

    - `anchors`: teacher checkpoints ordered from early to late (in a TrainConfig:
      `networks.anchors`, loaded into the teacher's architecture); required. The converged
      `teacher` is the last point of the route (if it is also the last anchor, it is not
      repeated).
    - Schedule, a pure function of the 0-based epoch: anchor index = number of switch epochs
      <= epoch. `switch_epochs` gives them explicitly (one per transition, increasing, > 0);
      otherwise the route is walked with equal epoch intervals (the paper's equal epoch interval
      strategy): every `epochs_per_anchor` epochs if given, else the run's epochs (the run
      context's `epochs`: the config's `epochs` in a run, 240 by default, the CIFAR-100
      recipe's length) split evenly over the route.
    - `on_epoch_start(epoch)` records the epoch for `eval_logits`; `forward_train` uses its own
      `epoch` argument. Either way the choice depends only on the epoch (resume-safe).

    Defaults are the project's KD recipe (mdistiller `CFG.KD`): CE weight 0.1, KD weight 0.9,
    T = 4. `eval_logits` reports "teacher" (the converged teacher, for the gap metrics) and
    "anchor" (the current one). Loss keys: "ce", "kd".
    """

    requires = ("teacher", "anchors")

    @dataclass(frozen=True)
    class Hparams(KDRecipe):
        switch_epochs: Sequence[int] | None = None
        epochs_per_anchor: int | None = None

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        anchors: Sequence[nn.Module] | None = None,
        hp: Hparams | None = None,
        context: RunContext = DEFAULT_CONTEXT,
    ):
        anchors = network_list(
            anchors,
            "anchors",
            "rco",
            "teacher checkpoints from early to late training, the converged teacher last or "
            "as teacher=; in a TrainConfig: networks.anchors",
        )
        if anchors[-1] is teacher:
            anchors = anchors[:-1]
        names = [f"anchor{i}" for i in range(len(anchors))]
        super().__init__(
            student, {"teacher": teacher, **dict(zip(names, anchors, strict=True))}, hp
        )
        hp = self.hp
        self.route = (*names, "teacher")
        self.switch_epochs = self._schedule(hp.switch_epochs, hp.epochs_per_anchor, context.epochs)
        self.epoch = 0

    def _schedule(self, switch_epochs, epochs_per_anchor, total_epochs) -> tuple[int, ...]:
        n = len(self.route)
        if switch_epochs is not None:
            if epochs_per_anchor is not None:
                raise ValueError("give either switch_epochs or epochs_per_anchor, not both")
            switches = tuple(switch_epochs)
            if (
                len(switches) != n - 1
                or not all(is_int(e) and e > 0 for e in switches)
                or any(a >= b for a, b in zip(switches, switches[1:], strict=False))
            ):
                raise ValueError(
                    f"switch_epochs must be {n - 1} increasing epochs > 0 (one per move along "
                    f"the route {list(self.route)}), got {list(switches)}"
                )
            return switches
        if epochs_per_anchor is not None:
            if not is_int(epochs_per_anchor) or epochs_per_anchor < 1:
                raise ValueError(f"epochs_per_anchor must be >= 1, got {epochs_per_anchor!r}")
            return tuple(k * epochs_per_anchor for k in range(1, n))
        if not is_int(total_epochs):
            raise ValueError(f"the run's epochs must be an integer, got {total_epochs!r}")
        return equal_interval_switches(n, total_epochs)

    def anchor_index(self, epoch: int) -> int:
        """Position on the route in (0-based) `epoch`: 0 = first anchor, last = the teacher."""
        return bisect_right(self.switch_epochs, epoch)

    def anchor_name(self, epoch: int) -> str:
        """Key in `self.teachers` of the network the student learns from in `epoch`."""
        return self.route[self.anchor_index(epoch)]

    def on_epoch_start(self, epoch: int) -> None:
        self.epoch = epoch

    def forward_train(self, images: Tensor, targets: Tensor, epoch: int = 0):
        anchor = self.teacher_logits(images, self.anchor_name(epoch))
        logits = self.student(images)
        return logits, {
            "ce": self.ce_weight * F.cross_entropy(logits, targets),
            "kd": self.kd_weight * kd_loss(logits, anchor, self.temperature),
        }

    @torch.no_grad()
    def eval_logits(self, images: Tensor) -> dict[str, Tensor]:
        teacher = self.teacher_logits(images)
        name = self.anchor_name(self.epoch)
        anchor = teacher if name == "teacher" else self.teacher_logits(images, name)
        return {"student": self.student(images), "teacher": teacher, "anchor": anchor}
