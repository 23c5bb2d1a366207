"""The stage interface: any model as stem -> stage_1 .. stage_N -> head.

A `StageSpec` names, for each part, a sequence of steps: a submodule path (resolved with
`model.get_submodule`) or a plain tensor function (e.g. `F.relu`). Running the steps in order
reproduces `model(x)` exactly. DFPT-KD inserts prompt/fusion blocks at the boundaries after each
stage and Feature-KD taps the same boundaries, so one mechanism serves both.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Step = str | Callable[[Tensor], Tensor]


def flatten(x: Tensor) -> Tensor:
    """(B, C, 1, 1) -> (B, C)."""
    return torch.flatten(x, 1)


def global_avg_pool(x: Tensor) -> Tensor:
    """Average over all spatial positions, keeping (B, C, 1, 1)."""
    return F.adaptive_avg_pool2d(x, 1)


def relu(x: Tensor) -> Tensor:
    """Out-of-place ReLU (safe on tensors shared by two forward paths)."""
    return F.relu(x)


@dataclass(frozen=True)
class StageSpec:
    """Steps of the stem, of each stage and of the head (module paths or tensor functions)."""

    stem: tuple[Step, ...]
    stages: tuple[tuple[Step, ...], ...]
    head: tuple[Step, ...]

    def __post_init__(self):
        if not self.stages:
            raise ValueError("a StageSpec needs at least one stage")


@dataclass(frozen=True)
class Boundary:
    """Shape of the feature map leaving a stage (per image)."""

    index: int
    channels: int
    height: int
    width: int


class MissingStageSpecError(TypeError):
    """Raised when a model has no stage spec and none was given."""


def get_stage_spec(model: nn.Module, spec: StageSpec | None = None) -> StageSpec:
    """The spec to use for `model`: `spec` if given, else `model.stage_spec`."""
    spec = spec if spec is not None else getattr(model, "stage_spec", None)
    if not isinstance(spec, StageSpec):
        raise MissingStageSpecError(
            f"{type(model).__name__} has no stage spec. Set `model.stage_spec = StageSpec("
            "stem=(...), stages=((...), ...), head=(...))` with submodule paths or tensor "
            "functions such that running them in order reproduces model(x), or pass spec=..."
        )
    return spec


class Stages:
    """A view of a model through its stage spec (no copies: steps call the model's modules)."""

    def __init__(self, model: nn.Module, spec: StageSpec | None = None):
        self.model = model
        self.spec = get_stage_spec(model, spec)
        self._stem = self._resolve(self.spec.stem)
        self._stages = [self._resolve(steps) for steps in self.spec.stages]
        self._head = self._resolve(self.spec.head)

    def _resolve(self, steps: Sequence[Step]) -> list[Callable[[Tensor], Tensor]]:
        out = []
        for step in steps:
            if isinstance(step, str):
                try:
                    out.append(self.model.get_submodule(step))
                except AttributeError as e:
                    raise ValueError(
                        f"stage spec names {step!r}, which is not a submodule of "
                        f"{type(self.model).__name__}"
                    ) from e
            elif callable(step):
                out.append(step)
            else:
                raise TypeError(f"a stage step must be a module path or a callable, got {step!r}")
        return out

    @property
    def num_stages(self) -> int:
        return len(self._stages)

    @staticmethod
    def _run(steps, x: Tensor) -> Tensor:
        for step in steps:
            x = step(x)
        return x

    def stem(self, x: Tensor) -> Tensor:
        return self._run(self._stem, x)

    def stage(self, i: int, x: Tensor) -> Tensor:
        """Run stage `i` (1-based, as in the paper's stage_1 .. stage_N)."""
        if not 1 <= i <= self.num_stages:
            raise IndexError(f"stage index {i} out of range 1..{self.num_stages}")
        return self._run(self._stages[i - 1], x)

    def head(self, x: Tensor) -> Tensor:
        return self._run(self._head, x)

    def forward(self, x: Tensor) -> Tensor:
        return self.features(x)[1]

    def features(self, x: Tensor) -> tuple[list[Tensor], Tensor]:
        """([stem output, stage_1 output, ..., stage_N output], logits)."""
        feats = [self.stem(x)]
        for i in range(1, self.num_stages + 1):
            feats.append(self.stage(i, feats[-1]))
        return feats, self.head(feats[-1])

    @torch.no_grad()
    def boundaries(self, input_size: Sequence[int] = (3, 32, 32)) -> list[Boundary]:
        """Channels and spatial size after the stem (index 0) and after each stage (1..N)."""
        p = next(self.model.parameters(), None)
        x = torch.zeros(2, *input_size, device=p.device if p is not None else "cpu")
        was_training = self.model.training
        self.model.eval()
        try:
            feats, _ = self.features(x)
        finally:
            self.model.train(was_training)
        return [Boundary(i, f.shape[1], f.shape[2], f.shape[3]) for i, f in enumerate(feats)]
