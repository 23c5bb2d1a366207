"""Method name -> Distiller class, and `create` with hyperparameter validation."""

from __future__ import annotations

import inspect

from torch import nn

from .base import Distiller

_METHODS: dict[str, type[Distiller]] = {}


def register(name: str):
    """Class decorator: make a Distiller available to `create(name, ...)`."""

    def wrap(cls: type[Distiller]) -> type[Distiller]:
        if name in _METHODS:
            raise KeyError(f"method {name!r} registered twice")
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
    """The method's hyperparameters and their defaults: its keyword-only constructor arguments
    except the networks it takes (`network_args`)."""
    cls = method_class(name)
    sig = inspect.signature(cls.__init__)
    return {
        k: p.default
        for k, p in sig.parameters.items()
        if p.kind is p.KEYWORD_ONLY and k not in cls.network_args
    }


def create(name: str, student: nn.Module, teacher: nn.Module | None = None, **hparams):
    """Build method `name` around `student` (and `teacher`), e.g.
    `create("dkd", student=s, teacher=t, beta=2.0)`. Unknown hyperparameters are an error
    listing the valid ones."""
    cls = method_class(name)
    valid = hyperparameters(name)
    unknown = sorted(set(hparams) - set(valid) - set(cls.network_args))
    if unknown:
        raise TypeError(
            f"method {name!r} got unknown hyperparameter(s) {unknown}; valid: "
            + ", ".join(f"{k}={v!r}" for k, v in valid.items())
        )
    params = inspect.signature(cls.__init__).parameters
    if "teacher" in params:
        if teacher is None:
            raise ValueError(f"method {name!r} needs a teacher (teacher=...)")
        return cls(student, teacher, **hparams)
    if teacher is not None:
        raise ValueError(f"method {name!r} trains without a teacher; do not pass teacher=")
    return cls(student, **hparams)
