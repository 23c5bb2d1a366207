"""Input checks shared by the methods: networks given as lists, loss weights, whole numbers."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn


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


def check_weights(**weights: float) -> None:
    """Loss weights must be >= 0; the error lists the offending ones."""
    bad = {k: v for k, v in weights.items() if v < 0}
    if bad:
        raise ValueError(f"loss weights must be >= 0, got {bad}")


def is_int(x) -> bool:
    """A whole number, and not a bool."""
    return isinstance(x, int) and not isinstance(x, bool)
