"""Distillation methods behind one registry: `create(name, student=..., teacher=..., **hp)`."""

from . import dfpt, vanilla  # noqa: F401  (registers the methods)
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
