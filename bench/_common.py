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

from dfpt_core.methods import DEFAULT_CONTEXT, RunContext, create
from dfpt_core.models import create_model

METHODS = ("ce", "kd", "dkd", "fitnet", "dfpt_kd", "dfpt_kdt")
ENTRANTS = (*METHODS, NAIVE)  # the library's methods and the bench-only naive DFPT-KD
BATCH, QUICK_BATCH = 64, 4
LR, MOMENTUM, WEIGHT_DECAY = 0.05, 0.9, 5e-4


@dataclass(frozen=True)
class Pair:
    """A teacher -> student pair on 32x32 inputs."""

    teacher: str
    student: str
    num_classes: int
    in_chans: int

    @property
    def name(self) -> str:
        return f"{self.teacher}-{self.student}"

    @property
    def input_size(self) -> tuple[int, int, int]:
        return (self.in_chans, 32, 32)


PAIRS = (
    Pair("resnet32x4", "resnet8x4", 100, 3),  # the paper's CIFAR-100 pair
    Pair("resnet20", "resnet8", 10, 1),  # the book's cpu-scale Fashion-MNIST pair
)


def parse_args(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    parser.add_argument("--quick", action="store_true", help="smaller batch, fewer repetitions")
    return parser.parse_args()


def pair_settings(quick: bool) -> dict:
    """The settings every per-pair benchmark records: batch size and the pairs."""
    return {
        "batch": QUICK_BATCH if quick else BATCH,
        "pairs": {p.name: {**asdict(p), "input_size": list(p.input_size)} for p in PAIRS},
    }


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


def train_step(distiller: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> Callable:
    """One optimizer step as the Trainer takes it (fp32): forward, summed losses, backward,
    SGD with the method's parameter groups. Gradients of every parameter are dropped first, so
    the naive reference's discarded backbone gradients do not accumulate."""
    opt = torch.optim.SGD(
        distiller.param_groups(LR, WEIGHT_DECAY),
        lr=LR,
        momentum=MOMENTUM,
        weight_decay=WEIGHT_DECAY,
    )

    def step() -> None:
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
