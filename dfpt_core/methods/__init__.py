"""Distillation methods behind one registry: `create(name, student=..., teacher=..., **hp)`.

One file per registered method (dfpt.py holds the DFPT-KD / DFPT-KDt family); each method
declares the networks it `requires`, its `Hparams` dataclass, and receives a `RunContext`.
"""

from . import ce, kd, dkd, fitnet, takd, dgkd, eskd, rco, dfpt  # noqa: F401, I001  (registers, in order)
from .base import DEFAULT_CONTEXT, Distiller, RunContext, freeze
from .registry import (
    create,
    hyperparameters,
    list_methods,
    method_class,
    register,
    resolved_hparams,
)

__all__ = [
    "DEFAULT_CONTEXT",
    "Distiller",
    "RunContext",
    "create",
    "freeze",
    "hyperparameters",
    "resolved_hparams",
    "list_methods",
    "method_class",
    "register",
]
