"""Name -> constructor registry behind `create_model` and `list_models`."""

from __future__ import annotations

import inspect
from collections.abc import Callable

from torch import nn

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register(name: str | None = None):
    """Decorator: register a constructor `fn(num_classes, in_chans, **kw) -> nn.Module`."""

    def wrap(fn):
        key = name or fn.__name__
        if key in _MODELS:
            raise KeyError(f"model {key!r} registered twice")
        _MODELS[key] = fn
        return fn

    return wrap


def list_models() -> list[str]:
    """Names accepted by `create_model`, in registration order."""
    return list(_MODELS)


def create_model(name: str, num_classes: int = 100, in_chans: int = 3, **kw) -> nn.Module:
    """Build a zoo model by its community name (e.g. "resnet32x4", "wrn_40_2", "tv_resnet18").

    `forward(x)` returns logits; `model.stage_spec` splits it into stem, stages and head.
    """
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(_MODELS)}")
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    if in_chans not in (1, 3):
        raise ValueError(f"in_chans must be 1 or 3, got {in_chans!r}")
    allowed = model_options(name)
    unknown = sorted(set(kw) - set(allowed))
    if unknown:
        raise TypeError(f"{name} got unexpected option(s) {unknown}; allowed: {allowed or 'none'}")
    return _MODELS[name](num_classes=num_classes, in_chans=in_chans, **kw)


def model_options(name: str) -> list[str]:
    """The options `create_model(name, **options)` accepts beyond num_classes and in_chans."""
    params = inspect.signature(_MODELS[name]).parameters
    return [p for p in params if p not in ("num_classes", "in_chans")]
