"""Method name -> Distiller class, and `create` with hyperparameter validation. Everything is read
from what a method declares (`requires`, `optional`, `Hparams`), never from its signature."""

from __future__ import annotations

import dataclasses

from torch import nn

from .base import DEFAULT_CONTEXT, Distiller, RunContext, hparams_record

_METHODS: dict[str, type[Distiller]] = {}


def register(name: str):
    """Class decorator: make a Distiller available to `create(name, ...)`. The class declares
    `requires` (its networks by role) and `Hparams` (a dataclass of its hyperparameters)."""

    def wrap(cls: type[Distiller]) -> type[Distiller]:
        if name in _METHODS:
            raise KeyError(f"method {name!r} registered twice")
        if not dataclasses.is_dataclass(cls.Hparams):
            raise TypeError(f"{cls.__name__}.Hparams must be a dataclass")
        cls.method_name = name
        _METHODS[name] = cls
        return cls

    return wrap


def list_methods() -> list[str]:
    return list(_METHODS)


def method_class(name: str) -> type[Distiller]:
    if name not in _METHODS:
        raise ValueError(f"unknown method {name!r}; known methods: {', '.join(_METHODS)}")
    return _METHODS[name]


def hyperparameters(name: str) -> dict[str, object]:
    """The method's hyperparameters and their defaults: the fields of its `Hparams`."""
    return {f.name: f.default for f in dataclasses.fields(method_class(name).Hparams)}


def make_hparams(name: str, values: dict):
    """Method `name`'s Hparams from those of `values` that are its hyperparameters."""
    valid = hyperparameters(name)
    return method_class(name).Hparams(**{k: v for k, v in values.items() if k in valid})


def resolved_hparams(name: str, method_args: dict) -> dict:
    """The hyperparameters a run of method `name` with `method_args` trains with, its defaults
    included, as `base.hparams_record` writes them."""
    return hparams_record(make_hparams(name, method_args))


def create(
    name: str,
    student: nn.Module,
    teacher: nn.Module | None = None,
    *,
    context: RunContext | None = None,
    **kwargs,
):
    """Build method `name` around `student` (and `teacher`), e.g.
    `create("dkd", student=s, teacher=t, beta=2.0)`.

    The other networks the method requires are keywords named by their role
    (`assistants=[...]`, `anchors=[...]`), as are its `optional` inputs (DFPT's `spec=`); every
    other keyword is a hyperparameter. `context` describes the run (classes, input size,
    epochs); without it, `DEFAULT_CONTEXT` (3 x 32 x 32 images, 240 epochs, 100 classes).
    Unknown hyperparameters are an error listing the valid ones."""
    cls = method_class(name)
    roles = [r for r in cls.requires if r != "teacher"]
    valid = hyperparameters(name)
    unknown = sorted(set(kwargs) - set(valid) - set(roles) - set(cls.optional))
    if unknown:
        raise TypeError(
            f"method {name!r} got unknown hyperparameter(s) {unknown}; valid: "
            + ", ".join(f"{k}={v!r}" for k, v in valid.items())
        )
    if "teacher" in cls.requires:
        if teacher is None:
            raise ValueError(f"method {name!r} needs a teacher (teacher=...)")
        networks = {"teacher": teacher}
    elif teacher is not None:
        raise ValueError(f"method {name!r} trains without a teacher; do not pass teacher=")
    else:
        networks = {}
    networks.update({r: kwargs.get(r) for r in roles})  # the method checks what it is given
    options = {k: kwargs[k] for k in cls.optional if k in kwargs}
    hp = make_hparams(name, kwargs)
    context = DEFAULT_CONTEXT if context is None else context
    if not isinstance(context, RunContext):
        raise TypeError(f"context must be a RunContext, got {type(context).__name__}")
    return cls(student, **networks, hp=hp, context=context, **options)
