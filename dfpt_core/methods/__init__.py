"""Distillation methods behind one registry: `create(name, student=..., teacher=..., **hp)`."""

from . import vanilla, dkd, feature, assistants, trajectory, dfpt  # noqa: F401, I001  (registers, in order)
from .base import Distiller, freeze
from .registry import create, hyperparameters, list_methods, method_class, register

__all__ = [
    "Distiller",
    "create",
    "freeze",
    "hyperparameters",
    "list_methods",
    "method_class",
    "register",
]
