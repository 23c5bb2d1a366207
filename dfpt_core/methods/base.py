"""The Distiller contract shared by every method (after mdistiller's base class).

A Distiller owns the student, its frozen teachers (`self.teachers`, always in eval mode, never
updated, run under no_grad) and any modules the method adds (projections, prompt blocks).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor, nn


def freeze(model: nn.Module) -> nn.Module:
    """Eval mode and no gradients: how every teacher is held."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


class Distiller(nn.Module):
    """Base class. Subclasses implement `forward_train` and may add modules.

    - `forward(images)` -> student logits (inference), `forward(images, targets, epoch=...)`
      -> `forward_train(...)` (so DistributedDataParallel can wrap the whole distiller);
    - `forward_train(images, targets, epoch=0)` -> (student logits, {loss name: scalar});
      the total loss is the sum of the dict's values;
    - `eval_logits(images)` -> {"student": ..., "teacher": ..., other paths} for metrics;
    - `param_groups(base_lr, weight_decay)` -> optimizer groups (each with a "name");
    - `extra_parameters()` -> what the method trains beyond the student;
    - `clip_parameters()` -> what gradient clipping covers (student + extras by default);
    - `on_epoch_start(epoch)` -> hook for schedules that change between epochs.
    """

    # keyword arguments that take networks (assistants, anchors), not hyperparameters
    network_args: tuple[str, ...] = ()

    def __init__(
        self,
        student: nn.Module,
        teachers: dict[str, nn.Module] | None = None,
        *,
        register_teachers: bool = True,
    ):
        """`teachers` are frozen and held in `self.teachers`. With `register_teachers=False`
        they are not registered as submodules of the distiller: a submodule that the subclass
        registers owns them (DFPT's DualPathTeacher), so each of their tensors has one
        state-dict key; `self.teachers` is then a view with the same ModuleDict interface."""
        super().__init__()
        self.student = student
        frozen = nn.ModuleDict({k: freeze(v) for k, v in (teachers or {}).items()})
        if register_teachers:
            self.teachers = frozen
        else:
            object.__setattr__(self, "teachers", frozen)

    @property
    def teacher(self) -> nn.Module:
        if "teacher" not in self.teachers:
            raise AttributeError(f"{type(self).__name__} has no teacher")
        return self.teachers["teacher"]

    def train(self, mode: bool = True) -> Distiller:
        super().train(mode)
        self.teachers.eval()
        return self

    def forward(self, images: Tensor, targets: Tensor | None = None, epoch: int = 0):
        if targets is None:
            return self.student(images)
        return self.forward_train(images, targets, epoch=epoch)

    def forward_train(self, images: Tensor, targets: Tensor, epoch: int = 0):
        raise NotImplementedError

    @torch.no_grad()
    def teacher_logits(self, images: Tensor, name: str = "teacher") -> Tensor:
        return self.teachers[name](images)

    @torch.no_grad()
    def eval_logits(self, images: Tensor) -> dict[str, Tensor]:
        out = {"student": self.student(images)}
        if "teacher" in self.teachers:
            out["teacher"] = self.teachers["teacher"](images)
        return out

    def extra_modules(self) -> Iterator[nn.Module]:
        """Trainable modules beyond the student (none by default)."""
        return iter(())

    def extra_parameters(self) -> list[nn.Parameter]:
        return [p for m in self.extra_modules() for p in m.parameters() if p.requires_grad]

    def param_groups(self, base_lr: float, weight_decay: float) -> list[dict]:
        groups = [
            {
                "name": "student",
                "params": list(self.student.parameters()),
                "lr": base_lr,
                "weight_decay": weight_decay,
            }
        ]
        extra = self.extra_parameters()
        if extra:
            groups.append(
                {"name": "extra", "params": extra, "lr": base_lr, "weight_decay": weight_decay}
            )
        return groups

    def clip_parameters(self) -> list[nn.Parameter]:
        return [p for g in self.param_groups(1.0, 0.0) for p in g["params"]]

    def on_epoch_start(self, epoch: int) -> None:
        """Called by the trainer before each epoch (0-based)."""
