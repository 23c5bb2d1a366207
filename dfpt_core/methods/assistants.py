"""Teacher assistants: bridge a capacity gap with intermediate-size networks.

- TAKD (Mirzadeh et al., "Improved Knowledge Distillation via Teacher Assistant", AAAI 2020):
  teacher -> assistant -> student, one KD run per step of the chain (the chain as run
  configurations: `dfpt_core.run.recipes.takd_stage_configs`).
- DGKD (Son, Na, Choi & Hwang, "Densely Guided Knowledge Distillation using Multiple Teacher
  Assistants", ICCV 2021): the teacher and every assistant teach the student at once, and each
  mini-batch drops some of them at random ("stochastic DGKD").

Assistants are networks, not hyperparameters: they are constructor arguments listed in
`network_args` (before the `*`, so `hyperparameters()` does not report them), frozen and kept
in eval mode in `self.teachers` like the teacher.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..losses import kd_loss
from .base import Distiller
from .registry import register

KD_REDUCTIONS = ("sum", "mean")


def network_list(networks, arg: str, method: str, hint: str) -> list[nn.Module]:
    """`networks` as a non-empty list of modules; a clear ValueError naming `arg` otherwise."""
    if isinstance(networks, nn.Module):
        networks = [networks]
    if networks is None or (isinstance(networks, Sequence) and len(networks) == 0):
        raise ValueError(f"method {method!r} needs {arg}=[...] ({hint}); none were given")
    if not isinstance(networks, Sequence):
        raise TypeError(f"{arg} must be a list of networks, got {type(networks).__name__}")
    for i, net in enumerate(networks):
        if not isinstance(net, nn.Module):
            raise TypeError(f"{arg}[{i}] must be an nn.Module, got {type(net).__name__}")
    return list(networks)


def _check_weights(**weights: float) -> None:
    bad = {k: v for k, v in weights.items() if v < 0}
    if bad:
        raise ValueError(f"loss weights must be >= 0, got {bad}")


@register("takd")
class TAKD(Distiller):
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

    network_args = ("assistants",)

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        assistants: Sequence[nn.Module] | None = None,
        *,
        temperature: float = 4.0,
        ce_weight: float = 0.1,
        kd_weight: float = 0.9,
    ):
        assistants = network_list(
            assistants,
            "assistants",
            "takd",
            "trained teacher assistants, the student learns from the last one; in a "
            "TrainConfig: assistants + assistant_checkpoints, see takd_stage_configs",
        )
        names = [f"assistant{i}" for i in range(len(assistants))]
        super().__init__(student, {"teacher": teacher, **dict(zip(names, assistants, strict=True))})
        _check_weights(ce_weight=ce_weight, kd_weight=kd_weight)
        self.assistant_names = tuple(names)
        self.temperature, self.ce_weight, self.kd_weight = temperature, ce_weight, kd_weight

    @property
    def assistant(self) -> nn.Module:
        """The assistant the student learns from (the last of the chain)."""
        return self.teachers[self.assistant_names[-1]]

    def forward_train(self, images: Tensor, targets: Tensor, epoch: int = 0):
        logits = self.student(images)
        guide = self.teacher_logits(images, self.assistant_names[-1])
        return logits, {
            "ce": self.ce_weight * F.cross_entropy(logits, targets),
            "kd": self.kd_weight * kd_loss(logits, guide, self.temperature),
        }

    @torch.no_grad()
    def eval_logits(self, images: Tensor) -> dict[str, Tensor]:
        return {
            "student": self.student(images),
            "teacher": self.teacher(images),
            "assistant": self.assistant(images),
        }


@register("dgkd")
class DGKD(Distiller):
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

    network_args = ("assistants",)

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        assistants: Sequence[nn.Module] | None = None,
        *,
        temperature: float = 4.0,
        ce_weight: float = 0.1,
        kd_weight: float = 0.9,
        drop_num: int = 1,
        kd_reduction: str = "sum",
    ):
        assistants = network_list(
            assistants,
            "assistants",
            "dgkd",
            "trained teacher assistants that teach the student together with the teacher; in "
            "a TrainConfig: assistants + assistant_checkpoints",
        )
        names = [f"assistant{i}" for i in range(len(assistants))]
        super().__init__(student, {"teacher": teacher, **dict(zip(names, assistants, strict=True))})
        self.guide_names = ("teacher", *names)
        n = len(self.guide_names)
        if isinstance(drop_num, bool) or not isinstance(drop_num, int) or not 0 <= drop_num < n:
            raise ValueError(
                f"drop_num must be an integer in [0, {n - 1}] with {n} guides (teacher + "
                f"{n - 1} assistants), so that at least one guide teaches; got {drop_num!r}"
            )
        if kd_reduction not in KD_REDUCTIONS:
            raise ValueError(f"kd_reduction must be one of {KD_REDUCTIONS}, got {kd_reduction!r}")
        _check_weights(ce_weight=ce_weight, kd_weight=kd_weight)
        self.temperature, self.ce_weight, self.kd_weight = temperature, ce_weight, kd_weight
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
        logits = self.student(images)
        kept = [name for name, k in zip(self.guide_names, self.sample_kept(), strict=True) if k]
        terms = [kd_loss(logits, self.teacher_logits(images, g), self.temperature) for g in kept]
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
            **{g: self.teachers[g](images) for g in self.guide_names},
        }
