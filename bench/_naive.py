"""The naive DFPT-KD reference the benchmarks time against the library's: the same losses and
the same trainable parameters, computed the straightforward way.

- no shared prefix: the prompt path runs the whole teacher from the input (stem, stage 1, ...),
  a second full forward beside the original path's (which stays under no_grad);
- the frozen backbone keeps requires_grad=True, so backward also computes its weight gradients
  (and back-propagates through the stem and the first stage); they are discarded, never stepped
  (the backbone is in no optimizer group).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from dfpt_core.methods.dfpt import DFPTKD
from dfpt_core.prompt import DualOutput, DualPathTeacher

NAIVE = "dfpt_kd_naive"


class NaiveDualPath(nn.Module):
    """Drop-in for a DFPT-KD `DualPathTeacher` (same prompt, fusion and head modules) that
    computes both paths from the input and leaves the backbone's gradients on."""

    backbone = None  # no trainable backbone copy: DFPT-KD, not DFPT-KDt

    def __init__(self, dual: DualPathTeacher):
        super().__init__()
        if dual.finetune:
            raise ValueError("the naive reference is DFPT-KD's (finetune=False)")
        self.dual = dual
        dual.original.requires_grad_(True)

    def prompt_modules(self) -> list[nn.Module]:
        return self.dual.prompt_modules()

    def forward(self, x: Tensor) -> DualOutput:
        dual, stages = self.dual, self.dual._original
        with torch.no_grad():
            original = dual.original(x)
        h = stages.stem(x)
        for i in range(1, stages.num_stages + 1):
            h = dual._prompted(i, stages.stage(i, h))
        for step in dual._new_head_steps:
            h = step(h)
        return DualOutput(original, h)


def naive_dfpt_kd(distiller: DFPTKD) -> DFPTKD:
    """Turn a library DFPT-KD distiller into the naive reference in place: its losses and
    parameter groups stay the library's, only the dual path is swapped."""
    if not isinstance(distiller, DFPTKD):
        raise TypeError(f"expected a dfpt_kd distiller, got {type(distiller).__name__}")
    distiller.dual = NaiveDualPath(distiller.dual)
    return distiller
