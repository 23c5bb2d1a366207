"""The Distiller contract shared by every method (after mdistiller's base class).

A Distiller owns the student, its frozen teachers (`self.teachers`, always in eval mode, never
updated, run under no_grad) and any modules the method adds (projections, prompt blocks).

A method declares what it needs instead of leaving it to be read from its constructor:
- `requires`: the networks it is built around, by role: "teacher" and, for some methods, lists
  of further networks ("assistants", "anchors"); `create` and the run builder pass exactly these;
- `Hparams`: a dataclass of its hyperparameters and their defaults (`hyperparameters(name)`);
- a `RunContext`: facts about the run (classes, input size, epochs) that are not choices of
  the method but that some methods need (FitNet and DFPT size their modules from the input size,
  RCO spaces its anchors over the run's epochs).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .shared_outputs import active_store


def hparams_record(hp) -> dict:
    """A method's hyperparameters (an Hparams dataclass, defaults included) as plain JSON values,
    the form a run's metrics.json keeps and the run cache compares."""
    return json.loads(json.dumps(dataclasses.asdict(hp), default=str))


def freeze(model: nn.Module) -> nn.Module:
    """Eval mode and no gradients: how every teacher is held."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


@dataclass(frozen=True)
class RunContext:
    """What a method may need to know about the run it is built for: the number of classes,
    the input size (C, H, W) and the run's length in epochs. The run builder fills it from the
    config and the dataset; `create` without `context=` uses `DEFAULT_CONTEXT`."""

    num_classes: int
    input_size: tuple[int, int, int]
    epochs: int

    def __post_init__(self):
        object.__setattr__(self, "input_size", tuple(self.input_size))
        if len(self.input_size) != 3:
            raise ValueError(f"input_size must be (C, H, W), got {self.input_size!r}")


#: the context `create` assumes when none is given: the project's default run (TrainConfig's
#: defaults, the CIFAR-100 recipe): 100 classes, 3 x 32 x 32 images, 240 epochs
DEFAULT_CONTEXT = RunContext(num_classes=100, input_size=(3, 32, 32), epochs=240)


@dataclass(frozen=True)
class NoHparams:
    """The hyperparameters of a method that has none."""


class Distiller(nn.Module):
    """Base class. Subclasses declare `requires` and `Hparams`, implement `forward_train` and
    may add modules.

    - `forward(images)` -> student logits (inference), `forward(images, targets, epoch=...)`
      -> `forward_train(...)` (so DistributedDataParallel can wrap the whole distiller);
    - `forward_train(images, targets, epoch=0)` -> (student logits, {loss name: scalar});
      the total loss is the sum of the dict's values;
    - `eval_logits(images)` -> {"student": ..., "teacher": ..., other paths} for metrics;
    - `metric_temperature` -> the temperature of the KD-decomposition metrics the trainer logs;
    - `param_groups(base_lr, weight_decay)` -> optimizer groups (each with a "name");
    - `extra_parameters()` -> what the method trains beyond the student;
    - `clip_parameters()` -> what gradient clipping covers (student + extras by default);
    - `on_epoch_start(epoch)` -> hook for schedules that change between epochs.

    Constructors take `(student, <the networks of requires, by role>, hp, context)` and, as
    keywords, the names in `optional` (objects that are neither networks nor hyperparameters,
    e.g. DFPT's `spec`); `create` calls them so.
    """

    #: the networks the method is built around, by role ("teacher", "assistants", "anchors")
    requires: tuple[str, ...] = ()
    #: further keyword inputs the method accepts (objects, not hyperparameters)
    optional: tuple[str, ...] = ()
    #: the method's hyperparameters, with their defaults
    Hparams: type = NoHparams

    def __init__(
        self,
        student: nn.Module,
        teachers: dict[str, nn.Module] | None = None,
        hp=None,
        *,
        register_teachers: bool = True,
    ):
        """`teachers` are frozen and held in `self.teachers`. With `register_teachers=False`
        they are not registered as submodules of the distiller: a submodule that the subclass
        registers owns them (DFPT's DualPathTeacher), so each of their tensors has one
        state-dict key; `self.teachers` is then a view with the same ModuleDict interface."""
        super().__init__()
        hp = self.Hparams() if hp is None else hp
        if not isinstance(hp, self.Hparams):
            raise TypeError(
                f"{type(self).__name__} takes hyperparameters as {self.Hparams.__qualname__}, "
                f"got {type(hp).__name__}"
            )
        self.student = student
        self.hp = hp
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

    def hparams_record(self) -> dict:
        """This run's hyperparameters, defaults included (`hparams_record`)."""
        return hparams_record(self.hp)

    @property
    def metric_temperature(self) -> float:
        """Temperature of the KD-decomposition metrics (KD, TCKD, NCKD, p_t^T) the trainer logs
        every epoch: the method's own T where it has one (subclasses), else 4.0."""
        return 4.0

    def train(self, mode: bool = True) -> Distiller:
        super().train(mode)
        self.teachers.eval()
        return self

    def forward(self, images: Tensor, targets: Tensor | None = None, epoch: int = 0):
        if targets is None:
            return self.student(images)
        return self.forward_train(images, targets, epoch=epoch)

    def forward_train(self, images: Tensor, targets: Tensor, epoch: int = 0):
        """(student logits, {loss name: weighted loss}). Methods run their frozen networks
        (teacher, assistants, anchors) before the student: then the student's forward and
        backward follow each other with its saved activations still in cache (the KD step in
        fp32 on a CPU 1.11x faster than student-teacher-backward: bench/README.md, peer-style
        step), with the same numbers."""
        raise NotImplementedError

    @torch.no_grad()
    def teacher_logits(self, images: Tensor, name: str = "teacher") -> Tensor:
        """The frozen network `name`'s logits; inside `shared_teacher_outputs()` looked up
        when another run computed them on the same batch (bit-identical)."""
        teacher = self.teachers[name]
        store = active_store()
        if store is None:
            return teacher(images)
        return store.get(teacher, images, lambda: teacher(images))

    @torch.no_grad()
    def eval_logits(self, images: Tensor) -> dict[str, Tensor]:
        out = {"student": self.student(images)}
        if "teacher" in self.teachers:
            out["teacher"] = self.teacher_logits(images)
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
