"""DFPT-KD's prompt path: prompt blocks, fusion blocks and the dual forward path teacher.

Li, Liu, Hu, Chen & Chen, "Dual Forward Path Teacher Knowledge Distillation" (arXiv 2506.18244).
The original path is the untouched pre-trained teacher. The prompt path re-uses the teacher's
stages but, after stage i, replaces the feature x_i by F_i(x_i, P_i(x_i)) and ends in a new head.
The paper (as summarised in the project's source) says that a fusion block "combines that prompt
with the teacher's original intermediate feature using a 1 by 1 convolution"; how, and how the
blocks start, it does not say. The variants (`FUSION_MODES`, `PROMPT_INITS`) are this project's
readings of that sentence:

- "concat" (the default; with its own initialisation, prompt_init "standard": the literal
  reading): F(x, P) = BN(conv1x1([x; P])) over the concatenation, PyTorch's default
  initialisation everywhere, so the prompt path starts away from the teacher;
- "residual" (with prompt_init "zero": the identity start): F(x, P) = z + BN(conv1x1(z)),
  z = x + P, the BN scale and P's last conv starting at zero, so the prompt path computes exactly
  the teacher's features at step 0 (only the new head differs);
- "grouped": the residual form with a grouped 1x1 conv (groups of GROUP_WIDTH channels), whose
  weights grow as 16 C rather than C^2 (prompt_init "zero");
- "add": F(x, P) = x + P, the paper's ablation without the fusion block (prompt_init "zero").

Each fusion starts with its own initialisation (`FUSION_INIT`); `prompt_init` overrides it.
The default is chosen by measurement (scripts/dfpt_study.py, results/dfpt_study.json: the cpu
pair resnet20 -> resnet8 on Fashion-MNIST, 5 paired seeds, top-1 on the 10,000 test images at
the epoch chosen on a validation split), the student's accuracy first, the prompt path's
dynamics second. The student's accuracy does not separate the variants: residual - concat
-0.81 points (95 % CI -3.55 to +1.93), grouped - concat +0.26 (-1.43 to +1.94). The dynamics
do: on 256 training images, the literal reading's prompt path is at 63 % after one epoch and
climbs to 81 % (the teacher: about 87 %), the easy-to-hard course the paper describes; with the
identity start it is at the teacher's level after one epoch (87 %) and stays there (88 %), as
is the grouped fusion (86 % -> 88 %). So the literal reading is the default.

Cost of all prompt + fusion blocks (`DualPathTeacher.budget`, 100 classes, 32x32 input, r1=4,
r2=0.25, kernels 3/5/7; M parameters / M multiply-adds), against the paper's Table VII for
WRN-40-2 (0.03 M parameters, 5.87 M FLOPs):

    teacher (params)      concat (default)  residual          grouped
    wrn_40_2 (2.26 M)      0.057 /   8.21     0.035 /   5.06     0.017 /   2.83
    resnet56 (0.86 M)      0.015 /   2.13     0.009 /   1.34     0.006 /   1.01
    resnet32x4 (7.43 M)    0.225 /  32.62     0.139 /  20.04     0.060 /   9.29
    vgg13 (9.46 M)         1.580 /  43.55     0.974 /  26.77     0.390 /  11.04
    ResNet50 (23.71 M)    14.487 / 697.16     8.917 / 428.72     3.408 / 168.15
    ShuffleV1 (0.95 M)     3.150 / 114.95     1.940 /  70.71     0.758 /  28.20

The default's fusion conv over [x; P] has 2 C^2 weights per boundary (the residual form C^2),
so on WRN-40-2 the literal reading costs more than Table VII's figure (0.057 M parameters and
8.21 M MACs against 0.03 M and 5.87 M FLOPs); the grouped fusion is the variant near it. It
removes the fusion's C^2 term; on wide teachers what remains is the prompt
blocks' own 1x1 down and up convs (2 C^2 / r1), so the blocks stay costly there whatever the
fusion (ShuffleV1: more than the network itself). `python -m dfpt_core.prompt` prints the table
(tests/test_prompt.py checks each figure against a count by hand).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from .models import count_params, create_model
from .models.stages import Stages, StageSpec

FUSION_MODES = ("residual", "concat", "grouped", "add")
PROMPT_INITS = ("zero", "standard")
#: each fusion's own initialisation of the prompt blocks (`prompt_init=None`)
FUSION_INIT = {"concat": "standard", "residual": "zero", "grouped": "zero", "add": "zero"}
HEAD_INITS = ("random", "copy")
BACKBONE_BN = ("train", "eval")
GROUP_WIDTH = 16  # channels per group of the "grouped" fusion (this project's choice)
BUDGET_TEACHERS = ("wrn_40_2", "resnet56", "resnet32x4", "vgg13", "ResNet50", "ShuffleV1")


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
    BN + ReLU follow the down and pointwise convs; the up-conv starts at zero (init "zero") or
    at PyTorch's default (init "standard")."""

    def __init__(
        self,
        channels: int,
        r1: float = 4,
        r2: float = 0.25,
        kernels: Sequence[int] = (3, 5, 7),
        init: str = "zero",
    ):
        super().__init__()
        if r1 < 1:
            raise ValueError(f"r1 (channel reduction) must be >= 1, got {r1}")
        if init not in PROMPT_INITS:
            raise ValueError(f"prompt_init must be one of {PROMPT_INITS}, got {init!r}")
        hidden = max(len(kernels), int(channels // r1))
        self.down = conv_bn_relu(channels, hidden)
        self.mspconv = MultiScalePartialConv(hidden, r2, kernels)
        self.pointwise = conv_bn_relu(hidden, hidden)
        self.up = nn.Conv2d(hidden, channels, 1)
        if init == "zero":
            nn.init.zeros_(self.up.weight)
            nn.init.zeros_(self.up.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.up(self.pointwise(self.mspconv(self.down(x))))


def group_width(channels: int) -> int:
    """Channels per group of the "grouped" fusion: the smallest divisor of `channels` that is at
    least GROUP_WIDTH (all of them when there are fewer)."""
    return next(w for w in range(min(GROUP_WIDTH, channels), channels + 1) if channels % w == 0)


class FusionBlock(nn.Module):
    """F_i(x, P): fuses the prompt P into the teacher's feature x (variants: module docstring).

    The residual forms ("residual", "grouped") start as F = x + P: the BN after their 1x1 conv
    has its scale initialised to zero, and the normalised correction keeps the features that
    enter the frozen next stage in their trained range (this project's choice; unmeasured
    against a bare conv). "concat" is a 1x1 conv from the 2C channels of [x; P] to C, then BN,
    default initialisation. "add" has no parameters.
    """

    def __init__(self, channels: int, mode: str = "concat"):
        super().__init__()
        if mode not in FUSION_MODES:
            raise ValueError(f"fusion mode must be one of {FUSION_MODES}, got {mode!r}")
        self.mode = mode
        if mode == "add":
            return
        cin = 2 * channels if mode == "concat" else channels
        groups = channels // group_width(channels) if mode == "grouped" else 1
        self.conv = nn.Conv2d(cin, channels, 1, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(channels)
        if mode != "concat":
            nn.init.zeros_(self.bn.weight)

    def forward(self, x: Tensor, prompt: Tensor) -> Tensor:
        if self.mode == "concat":
            return self.bn(self.conv(torch.cat([x, prompt], dim=1)))
        fused = x + prompt
        return fused if self.mode == "add" else fused + self.bn(self.conv(fused))


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
    the prompt path owns a trainable copy of the whole backbone; the original stays frozen. The
    copy's BatchNorm layers normalise with batch statistics and update their running averages
    while training (`backbone_bn="train"`), or keep the teacher's running statistics
    (`backbone_bn="eval"`, so that at step 0 the copy computes exactly the teacher's features);
    their affine parameters train either way. "train" is the default: with the residual fusion
    and "eval" the KDt prompt path diverged (NaN) within the first 25 steps on both seeds of the
    first cpu study; with the default (literal) fusion both train, and "eval" - "train" is
    -0.30 points of student top-1 (95 % CI -2.65 to +2.06, 2 seeds; results/dfpt_study.json).
    """

    def __init__(
        self,
        teacher: nn.Module,
        positions="all",
        r1: float = 4,
        r2: float = 0.25,
        kernels: Sequence[int] = (3, 5, 7),
        fusion: str = "concat",
        prompt_init: str | None = None,
        head_init: str = "random",
        finetune: bool = False,
        backbone_bn: str = "train",
        spec: StageSpec | None = None,
        input_size: Sequence[int] = (3, 32, 32),
    ):
        super().__init__()
        if head_init not in HEAD_INITS:
            raise ValueError(f"head_init must be one of {HEAD_INITS}, got {head_init!r}")
        if backbone_bn not in BACKBONE_BN:
            raise ValueError(f"backbone_bn must be one of {BACKBONE_BN}, got {backbone_bn!r}")
        self.original = teacher
        for p in teacher.parameters():
            p.requires_grad_(False)
        teacher.eval()
        original_stages = Stages(teacher, spec)
        self.positions = parse_positions(positions, original_stages.num_stages)
        self.finetune = finetune
        self.backbone_bn = backbone_bn
        self.input_size = tuple(input_size)
        channels = {b.index: b.channels for b in original_stages.boundaries(input_size)}
        if fusion not in FUSION_MODES:
            raise ValueError(f"fusion mode must be one of {FUSION_MODES}, got {fusion!r}")
        prompt_init = FUSION_INIT[fusion] if prompt_init is None else prompt_init
        self.prompts = nn.ModuleDict(
            {str(i): PromptBlock(channels[i], r1, r2, kernels, prompt_init) for i in self.positions}
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
        if self.backbone is not None and self.backbone_bn == "eval":
            for m in self.backbone.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
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
        """Parameters and FLOPs of all prompt + fusion blocks for one image, to set beside the
        paper's Table VII ("flops" counts a multiply-add as 2, "macs" as 1; which convention the
        paper's FLOPs use, the project's source does not say)."""
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


def budget_table(names: Sequence[str] = BUDGET_TEACHERS, num_classes: int = 100) -> str:
    """The table of the module docstring: each teacher's size and the blocks' budget (M
    parameters / M multiply-adds) per fusion variant."""
    fusions = ("concat", "residual", "grouped")
    header = "".join(f"{f + (' (default)' if f == 'concat' else ''):18s}" for f in fusions)
    lines = ["teacher (params)      " + header.rstrip()]
    for name in names:
        teacher = create_model(name, num_classes=num_classes)
        cells = []
        for fusion in fusions:
            b = DualPathTeacher(teacher, fusion=fusion).budget()
            cells.append(f"{b['params'] / 1e6:6.3f} / {b['macs'] / 1e6:6.2f}")
        label = f"{name} ({count_params(teacher) / 1e6:.2f} M)"
        lines.append(f"{label:22s}" + "    ".join(cells))
    return "\n".join(lines)


if __name__ == "__main__":
    print(budget_table())
