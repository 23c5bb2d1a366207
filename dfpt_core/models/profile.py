"""Parameter and FLOP counts (FLOPs from torch.utils.flop_counter)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (shared tensors counted once)."""
    seen = {}
    for p in model.parameters():
        if not trainable_only or p.requires_grad:
            seen[id(p)] = p.numel()
    return sum(seen.values())


@torch.no_grad()
def count_flops(model: nn.Module, input_size: Sequence[int] = (3, 32, 32), forward=None) -> int:
    """FLOPs of one forward pass on one image of `input_size` (C, H, W), as counted by
    torch.utils.flop_counter (convolutions and matrix products; a multiply-add is 2 FLOPs).

    Tables in the KD literature (thop, ptflops) count a multiply-add as ONE "FLOP"; divide by 2
    to compare (see `count_macs`). `forward` overrides the call (e.g. a prompt path)."""
    p = next(model.parameters(), None)
    x = torch.zeros(1, *input_size, device=p.device if p is not None else "cpu")
    was_training = model.training
    model.eval()
    try:
        with FlopCounterMode(display=False) as counter:
            (forward or model)(x)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())


def count_macs(model: nn.Module, input_size: Sequence[int] = (3, 32, 32), forward=None) -> int:
    """Multiply-accumulates per image: the unit the KD papers call FLOPs."""
    return count_flops(model, input_size, forward) // 2
