"""DFPT-KD's prompt path: prompt blocks, fusion blocks and the dual forward path teacher.

Li, Liu, Hu, Chen & Chen, "Dual Forward Path Teacher Knowledge Distillation" (arXiv 2506.18244).
The original path is the untouched pre-trained teacher. The prompt path re-uses the teacher's
stages but, after stage i, replaces the feature x_i by F_i(x_i + P_i(x_i)) and ends in a new head.

Initialisation (this project's choice): the last 1x1 conv of every prompt block starts at zero
(P_i(x) = 0) and every fusion block starts as the identity, so at step 0 the prompt path computes
exactly the teacher's features; only the new head differs (re-initialised classifier, as in the
paper, or copied with head_init="copy" to make the whole prompt path equal the teacher).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from .models.stages import Stages, StageSpec

FUSION_MODES = ("conv", "add")
HEAD_INITS = ("random", "copy")


def split_sizes(total: int, parts: int) -> list[int]:
    """`total` channels in `parts` near-equal groups, larger groups first."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


class MultiScalePartialConv(nn.Module):
    """Convolve a fraction r2 of the channels, split into one group per kernel size (same
    padding), and pass the other channels through untouched (partial convolution)."""

    def __init__(self, channels: int, r2: float, kernels: Sequence[int] = (3, 5, 7)):
        super().__init__()
        if not 0.0 < r2 <= 1.0:
            raise ValueError(f"r2 (fraction of channels convolved) must be in (0, 1], got {r2}")
        if not kernels or any(k < 1 or k % 2 == 0 for k in kernels):
            raise ValueError(f"kernels must be odd sizes >= 1, e.g. (3, 5, 7); got {kernels}")
        active = min(channels, max(len(kernels), round(channels * r2)))
        if active < len(kernels):
            raise ValueError(f"{channels} channels cannot feed {len(kernels)} kernel groups")
        self.sizes = split_sizes(active, len(kernels))
        self.passthrough = channels - active
        self.convs = nn.ModuleList(
            nn.Conv2d(c, c, k, padding=k // 2, bias=False)
            for c, k in zip(self.sizes, kernels, strict=True)
        )

    def forward(self, x: Tensor) -> Tensor:
        groups = x.split([*self.sizes, self.passthrough], dim=1)
        out = [conv(g) for conv, g in zip(self.convs, groups, strict=False)]
        return torch.cat([*out, groups[-1]], dim=1) if self.passthrough else torch.cat(out, 1)


def conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class PromptBlock(nn.Module):
    """P_i: 1x1 down-conv (channels / r1) -> multi-scale partial conv (fraction r2 of the
    reduced channels, one group per kernel) -> 1x1 pointwise conv -> 1x1 up-conv to `channels`.
    BN + ReLU follow the down and pointwise convs; the up-conv starts at zero."""

    def __init__(
        self, channels: int, r1: float = 4, r2: float = 0.25, kernels: Sequence[int] = (3, 5, 7)
    ):
        super().__init__()
        if r1 < 1:
            raise ValueError(f"r1 (channel reduction) must be >= 1, got {r1}")
        hidden = max(len(kernels), int(channels // r1))
        self.down = conv_bn_relu(channels, hidden)
        self.mspconv = MultiScalePartialConv(hidden, r2, kernels)
        self.pointwise = conv_bn_relu(hidden, hidden)
        self.up = nn.Conv2d(hidden, channels, 1)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.up(self.pointwise(self.mspconv(self.down(x))))


class FusionBlock(nn.Module):
    """F_i: fuses the prompt into the feature with a 1x1 conv on z = x + prompt.

    mode="conv": F(z) = z + BN(conv1x1(z)), the BN scale initialised to zero, so F starts as
    the identity; the residual, batch-normalised form keeps the features entering the frozen
    next stage in their trained range (a bare identity-initialised 1x1 conv in front of frozen
    eval-mode stages diverges at the paper's learning rate). mode="add": the ablation without
    the conv, F(z) = z.
    """

    def __init__(self, channels: int, mode: str = "conv"):
        super().__init__()
        if mode not in FUSION_MODES:
            raise ValueError(f"fusion mode must be one of {FUSION_MODES}, got {mode!r}")
        self.mode = mode
        if mode == "conv":
            self.conv = nn.Conv2d(channels, channels, 1, bias=False)
            self.bn = nn.BatchNorm2d(channels)
            nn.init.zeros_(self.bn.weight)

    def forward(self, x: Tensor, prompt: Tensor) -> Tensor:
        fused = x + prompt
        return fused + self.bn(self.conv(fused)) if self.mode == "conv" else fused


class DualOutput(NamedTuple):
    original: Tensor
    prompt: Tensor
    original_features: list[Tensor] | None = None
    prompt_features: list[Tensor] | None = None


def parse_positions(positions, num_stages: int) -> tuple[int, ...]:
    """ "all" -> every stage boundary (1..N); an int or a sequence of ints -> those boundaries."""
    allowed = tuple(range(1, num_stages + 1))
    if positions == "all":
        return allowed
    chosen = (positions,) if isinstance(positions, int) else tuple(positions)
    bad = [p for p in chosen if isinstance(p, bool) or not isinstance(p, int) or p not in allowed]
    if not chosen or bad or len(set(chosen)) != len(chosen):
        raise ValueError(
            f"positions must be 'all' or distinct stage boundaries from {allowed} "
            f"(boundary i follows stage i); got {positions!r}"
        )
    return tuple(sorted(chosen))


class DualPathTeacher(nn.Module):
    """A frozen teacher with a second, prompted forward path.

    original: stem -> stage_1 -> ... -> stage_N -> head                (the teacher, untouched)
    prompt:   stem -> stage_1 -> F_1(x + P_1 x) -> stage_2 -> ... -> stage_N -> F_N(..) -> new head

    Prompt/fusion blocks sit after every chosen stage (`positions`, default all N boundaries).
    With `finetune=False` (DFPT-KD) the prompt path runs through the teacher's own frozen modules
    and both paths share the computation up to the first prompt. With `finetune=True` (DFPT-KDt)
    the prompt path owns a trainable copy of the whole backbone; the original stays frozen.
    """

    def __init__(
        self,
        teacher: nn.Module,
        positions="all",
        r1: float = 4,
        r2: float = 0.25,
        kernels: Sequence[int] = (3, 5, 7),
        fusion: str = "conv",
        head_init: str = "random",
        finetune: bool = False,
        spec: StageSpec | None = None,
        input_size: Sequence[int] = (3, 32, 32),
    ):
        super().__init__()
        if head_init not in HEAD_INITS:
            raise ValueError(f"head_init must be one of {HEAD_INITS}, got {head_init!r}")
        self.original = teacher
        for p in teacher.parameters():
            p.requires_grad_(False)
        teacher.eval()
        original_stages = Stages(teacher, spec)
        self.positions = parse_positions(positions, original_stages.num_stages)
        self.finetune = finetune
        self.input_size = tuple(input_size)
        channels = {b.index: b.channels for b in original_stages.boundaries(input_size)}
        self.prompts = nn.ModuleDict(
            {str(i): PromptBlock(channels[i], r1, r2, kernels) for i in self.positions}
        )
        self.fusions = nn.ModuleDict(
            {str(i): FusionBlock(channels[i], fusion) for i in self.positions}
        )
        # The prompt path's backbone: the teacher itself (frozen) or a trainable copy (KDt).
        self.backbone = copy.deepcopy(teacher).requires_grad_(True) if finetune else None
        self._original = original_stages
        self._prompt = Stages(self.backbone, original_stages.spec) if finetune else original_stages
        self.new_head = nn.ModuleList(
            copy.deepcopy(m) for m in self._prompt._head if isinstance(m, nn.Module)
        )
        self.new_head.requires_grad_(True)
        if head_init == "random":
            for m in self.new_head.modules():
                if isinstance(m, nn.Linear):
                    m.reset_parameters()
        copies = iter(self.new_head)
        self._new_head_steps = [
            next(copies) if isinstance(m, nn.Module) else m for m in self._prompt._head
        ]
        if finetune:  # the copy's own head is replaced by new_head: nothing there may train
            for m in self._prompt._head:
                if isinstance(m, nn.Module):
                    m.requires_grad_(False)

    def train(self, mode: bool = True) -> DualPathTeacher:
        super().train(mode)
        self.original.eval()  # the original path is always the pre-trained teacher
        return self

    def prompt_modules(self) -> list[nn.Module]:
        """What DFPT-KD trains: prompt blocks, fusion blocks and the new head."""
        return [self.prompts, self.fusions, self.new_head]

    def _prompted(self, i: int, x: Tensor) -> Tensor:
        key = str(i)
        if key not in self.prompts:
            return x
        return self.fusions[key](x, self.prompts[key](x))

    def forward(self, x: Tensor, features: bool = False) -> DualOutput:
        first = self.positions[0]
        with torch.no_grad():
            h = self._original.stem(x)
            original_feats = [h]
            for i in range(1, self._original.num_stages + 1):
                h = self._original.stage(i, h)
                original_feats.append(h)
            original = self._original.head(h)
        if self.finetune:  # an independent, trainable backbone: run the prompt path in full
            h, start = self._prompt.stem(x), 1
            prompt_feats = [h]
        else:  # shared prefix: reuse the teacher's features up to the first prompt
            h, start = original_feats[first], first + 1
            prompt_feats = list(original_feats[: first + 1])
            h = self._prompted(first, h)
            prompt_feats[first] = h
        for i in range(start, self._prompt.num_stages + 1):
            h = self._prompted(i, self._prompt.stage(i, h))
            prompt_feats.append(h)
        for step in self._new_head_steps:
            h = step(h)
        if not features:
            return DualOutput(original, h)
        return DualOutput(original, h, original_feats, prompt_feats)

    @torch.no_grad()
    def budget(self) -> dict[str, float]:
        """Parameters and FLOPs of all prompt + fusion blocks for one image (paper, Table VII;
        "macs" = multiply-accumulates, the unit the paper's tables call FLOPs)."""
        params = sum(p.numel() for m in (self.prompts, self.fusions) for p in m.parameters())
        bounds = {b.index: b for b in self._original.boundaries(self.input_size)}
        was_training = self.training
        self.eval()
        try:
            with FlopCounterMode(display=False) as counter:
                for i in self.positions:
                    b = bounds[i]
                    self._prompted(
                        i,
                        torch.zeros(
                            1,
                            b.channels,
                            b.height,
                            b.width,
                            device=self.prompts[str(i)].up.weight.device,
                        ),
                    )
        finally:
            self.train(was_training)
        flops = counter.get_total_flops()
        return {"params": params, "flops": flops, "macs": flops // 2}
