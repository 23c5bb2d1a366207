"""Shared by the benchmark scripts: the pairs and methods, building a distiller and its training
step, interleaved timing, and the JSON every script writes."""

from __future__ import annotations

import argparse
import copy
import functools
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from _naive import NAIVE, naive_dfpt_kd
from runner import environment
from torch import nn

from dfpt_core.engine.runtime import keep_freed_memory, native_bf16
from dfpt_core.engine.trainer import autocast_context
from dfpt_core.methods import DEFAULT_CONTEXT, RunContext, create
from dfpt_core.models import create_model

METHODS = ("ce", "kd", "dkd", "fitnet", "dfpt_kd", "dfpt_kdt")
ENTRANTS = (*METHODS, NAIVE)  # the library's methods and the bench-only naive DFPT-KD
BATCH, QUICK_BATCH = 64, 4
LR, MOMENTUM, WEIGHT_DECAY = 0.05, 0.9, 5e-4


@dataclass(frozen=True)
class Pair:
    """A teacher -> student pair on 32x32 inputs (teacher None: the student alone, CE only)."""

    teacher: str | None
    student: str
    num_classes: int
    in_chans: int

    @property
    def name(self) -> str:
        return f"{self.teacher}-{self.student}" if self.teacher else self.student

    @property
    def input_size(self) -> tuple[int, int, int]:
        return (self.in_chans, 32, 32)


PAIRS = (
    Pair("resnet32x4", "resnet8x4", 100, 3),  # the paper's CIFAR-100 pair
    Pair("resnet20", "resnet8", 10, 1),  # the book's cpu-scale Fashion-MNIST pair
)
#: the students the book trains alone (CE), on its cpu-scale data (Fashion-MNIST: 10 classes,
#: 1x32x32), timed together as one group named STUDENTS_GROUP
STUDENTS = tuple(Pair(None, s, 10, 1) for s in ("resnet8", "resnet14", "resnet20", "resnet32"))
STUDENTS_GROUP = "students"


@dataclass(frozen=True)
class StepSetting:
    """How a training step is run on the device: memory format and autocast, as the Trainer
    applies `channels_last` and `amp` (engine/trainer.py)."""

    name: str
    channels_last: bool
    amp: str  # "none" (fp32) or "bf16" (autocast around forward and losses)

    @property
    def precision(self) -> str:
        """Which GEMM peak the step is measured against: "fp32" or "bf16"."""
        return "fp32" if self.amp == "none" else self.amp


FP32 = StepSetting("fp32_nchw", False, "none")  # the reference setting (step_ms, flops)
SETTINGS = (FP32, StepSetting("fp32_channels_last", True, "none"))
SETTINGS += (StepSetting("bf16_channels_last", True, "bf16"),)


def trainer_malloc(device: torch.device) -> str:
    """Set this process's allocator as the Trainer does on `device` (its default `cpu_malloc:
    keep` on a CPU, `engine.runtime.keep_freed_memory`) and return the mode that holds:
    "keep", or "system" where it does not apply. Every timing script calls it first, since the
    step it times is the Trainer's; `memory.py` does not (it sets glibc's policy itself)."""
    return "keep" if device.type == "cpu" and keep_freed_memory() else "system"


def skip_reason(setting: StepSetting, device: torch.device) -> str | None:
    """Why `setting` is not timed on `device` (None: it is)."""
    if setting.amp == "bf16" and not native_bf16(device):
        return f"no native bf16 on {device} (dfpt_core.engine.runtime.bf16_evidence)"
    return None


def fastest_setting(device: torch.device) -> StepSetting:
    """The fastest CPU settings the Trainer offers: channels_last, with bf16 where native."""
    return next(s for s in reversed(SETTINGS) if s.channels_last and not skip_reason(s, device))


def groups() -> dict[str, dict[str, tuple[str, Pair]]]:
    """What the per-step benchmarks time, as {group: {row: (entrant, pair)}}: every entrant of
    each pair, and the book's students alone (CE), each group timed together."""
    out = {p.name: {e: (e, p) for e in ENTRANTS} for p in PAIRS}
    out[STUDENTS_GROUP] = {s.student: ("ce", s) for s in STUDENTS}
    return out


def parse_args(description: str, extra: Callable | None = None) -> argparse.Namespace:
    """--out and --quick, and what `extra(parser)` adds."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    parser.add_argument("--quick", action="store_true", help="smaller batch, fewer repetitions")
    if extra:
        extra(parser)
    return parser.parse_args()


def pair_settings(quick: bool) -> dict:
    """The settings every per-pair benchmark records: batch size, the pairs and the students."""
    return {
        "batch": QUICK_BATCH if quick else BATCH,
        "pairs": {p.name: _meta(p) for p in PAIRS},
        "students": {s.name: _meta(s) for s in STUDENTS},
    }


def _meta(p: Pair) -> dict:
    meta = {**asdict(p), "input_size": list(p.input_size)}
    return meta if p.teacher else {k: v for k, v in meta.items() if k != "teacher"}


def write(path: Path, settings: dict, results) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"environment": environment(), "settings": settings, "results": results}
    path.write_text(json.dumps(record, indent=2))


@functools.lru_cache
@torch.no_grad()
def _calibrated_teacher(pair: Pair) -> nn.Module:
    torch.manual_seed(0)
    model = create_model(pair.teacher, num_classes=pair.num_classes, in_chans=pair.in_chans)
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.momentum = None  # cumulative average: running stats = this batch's stats
    model.train()(torch.randn(8, *pair.input_size))
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum
    return model.eval()


def teacher(pair: Pair) -> nn.Module:
    """A randomly initialised teacher whose BN running statistics come from a random batch, so
    that in eval mode its activations stay in range as a trained teacher's do (with the default
    statistics they grow through the depth and DFPT's prompt-path losses become NaN)."""
    return copy.deepcopy(_calibrated_teacher(pair))


def build(entrant: str, pair: Pair, device: torch.device) -> nn.Module:
    """The distiller of `entrant` (a method name or NAIVE) for `pair`, in training mode."""
    method = "dfpt_kd" if entrant == NAIVE else entrant
    t = None if method == "ce" else teacher(pair)
    torch.manual_seed(0)  # after teacher(): the same student and prompt blocks in every build
    student = create_model(pair.student, num_classes=pair.num_classes, in_chans=pair.in_chans)
    context = RunContext(pair.num_classes, pair.input_size, DEFAULT_CONTEXT.epochs)
    distiller = create(method, student=student, teacher=t, context=context)
    if entrant == NAIVE:
        naive_dfpt_kd(distiller)
    return distiller.to(device).train()


def batch(pair: Pair, size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed random batch (images, labels) for `pair`."""
    g = torch.Generator().manual_seed(0)
    images = torch.randn(size, *pair.input_size, generator=g)
    labels = torch.randint(0, pair.num_classes, (size,), generator=g)
    return images.to(device), labels.to(device)


def train_step(
    distiller: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    setting: StepSetting = FP32,
) -> Callable:
    """One optimizer step as the Trainer takes it: forward (and the losses) under the setting's
    autocast, summed losses, backward, SGD with the method's parameter groups; with
    `channels_last`, the distiller and the images in that memory format. Gradients of every
    parameter are dropped first, so the naive reference's discarded backbone gradients do not
    accumulate."""
    if setting.channels_last:
        distiller.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    autocast = autocast_context(images.device, setting.amp)
    opt = torch.optim.SGD(
        distiller.param_groups(LR, WEIGHT_DECAY),
        lr=LR,
        momentum=MOMENTUM,
        weight_decay=WEIGHT_DECAY,
    )

    def step() -> None:
        with autocast:
            _, losses = distiller(images, labels)
        distiller.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        opt.step()

    return step


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work (no-op on the CPU), so that wall time covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def interleaved_seconds(
    fns: dict[str, Callable], rounds: int, warmup: int, device: torch.device
) -> dict[str, list[float]]:
    """Seconds of each of `fns` over `rounds` round-robin rounds after `warmup` untimed rounds,
    the starting function rotating each round, so that drift (other load, heat) reaches all
    alike."""
    names = list(fns)
    times = {name: [] for name in names}
    for r in range(warmup + rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            synchronize(device)
            start = time.perf_counter()
            fns[name]()
            synchronize(device)
            if r >= warmup:
                times[name].append(time.perf_counter() - start)
    return times
