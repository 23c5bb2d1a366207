"""GPU benchmark, one command, at most about 5 minutes on one GPU, no download: training
throughput (img/s) and the projected 240-epoch time (training steps only) of ce, kd, dfpt_kd and
dfpt_kdt on resnet32x4 -> resnet8x4 with the fastest settings (GPU-resident tensors through
TensorLoader, channels_last, bf16 autocast, torch.compile), beside a reference loop in the style
of the public codebases (torchvision DataLoader with PIL transforms over the same uint8 images,
fp32, eager, the peer-style KD step of bench/peer_step.py), all in this run. The data is
SYNTHETIC: random uint8 images of CIFAR-100's shape (50000 x 3x32x32, 100 classes).

    python bench/gpu.py [--out runs/bench/gpu.json]
    python bench/gpu.py --device cpu --quick     # smoke path only (no compile, tiny sizes)
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch
from _common import LR, MOMENTUM, WEIGHT_DECAY, build, synchronize, teacher
from loader import PILImages
from peer_step import CE_WEIGHT, KD_WEIGHT, PAIR, T
from runner import REPO_ROOT, environment
from torch.nn import functional as F
from torch.utils.data import DataLoader
from torchvision import transforms

from dfpt_core.data import TensorLoader
from dfpt_core.engine.trainer import autocast_context
from dfpt_core.models import create_model

METHODS = ("ce", "kd", "dfpt_kd", "dfpt_kdt")
TRAIN_IMAGES, EPOCHS, BATCH = 50000, 240, 64
MEAN, STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)  # CIFAR-100's
NOTE = "synthetic data: random uint8 images of CIFAR-100's shape, no download"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "runs" / "bench" / "gpu.json")
    parser.add_argument("--device", default="cuda", help="cuda (default), or cpu with --quick")
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny sizes, no compile")
    return parser.parse_args(argv)


def fast_step(method: str, device: torch.device, compile_: bool):
    """A step of `method` with the fastest settings (channels_last, bf16 autocast, compile)."""
    distiller = build(method, PAIR, device).to(memory_format=torch.channels_last)
    if compile_:
        for module in (distiller.student, *distiller.teachers.values()):
            module.compile()
    opt = torch.optim.SGD(
        distiller.param_groups(LR, WEIGHT_DECAY),
        lr=LR,
        momentum=MOMENTUM,
        weight_decay=WEIGHT_DECAY,
    )
    autocast = autocast_context(device, "bf16")

    def step(images, labels) -> None:
        with autocast:
            _, losses = distiller(images, labels)
        opt.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        opt.step()

    return step


def reference_step(device: torch.device):
    """The public codebases' KD step: fp32, eager, NCHW, teacher under no_grad."""
    t_model = teacher(PAIR).to(device).eval()
    torch.manual_seed(0)
    student = create_model(PAIR.student, num_classes=PAIR.num_classes).to(device).train()
    opt = torch.optim.SGD(student.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)

    def step(images, labels) -> None:
        images, labels = images.to(device), labels.to(device)
        with torch.no_grad():
            logit_t = t_model(images)
        logit_s = student(images)
        kl = F.kl_div(
            F.log_softmax(logit_s / T, 1), F.softmax(logit_t / T, 1), reduction="batchmean"
        )
        loss = CE_WEIGHT * F.cross_entropy(logit_s, labels) + KD_WEIGHT * kl * T * T
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step


def throughput(step, loader, warmup: int, steps: int, device: torch.device, batch: int) -> dict:
    """img/s of `step` over batches of `loader` (its loading included), after `warmup` steps."""
    done, start, epoch = 0, None, 0
    while start is None or done < steps:
        if isinstance(loader, TensorLoader):
            loader.set_epoch(epoch)
        epoch += 1
        for images, labels in loader:
            if done == warmup and start is None:
                synchronize(device)
                start, done = time.perf_counter(), 0
            step(images, labels)
            done += 1
            if start is not None and done == steps:
                break
    synchronize(device)
    seconds = time.perf_counter() - start
    img_s = float(f"{steps * batch / seconds:.5g}")
    return {
        "images_per_s": img_s,
        "steps": steps,
        "seconds": round(seconds, 6),
        "projected_epochs_h": round(TRAIN_IMAGES * EPOCHS / img_s / 3600, 3),
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("bench/gpu.py: error: needs CUDA (no GPU found); a CPU smoke run: "
              "--device cpu --quick", file=sys.stderr)  # fmt: skip
        return 2
    if device.type != "cuda" and not (device.type == "cpu" and args.quick):
        print("bench/gpu.py: error: a GPU benchmark; only --device cpu --quick runs without "
              "CUDA (a smoke path, its numbers mean nothing)", file=sys.stderr)  # fmt: skip
        return 2
    quick = args.quick
    batch = 8 if quick else BATCH
    n = 64 if quick else TRAIN_IMAGES
    warmup, steps = (1, 3) if quick else (30, 200)
    compile_ = not quick
    workers = 0 if quick else min(8, os.cpu_count() or 1)
    print(f"bench/gpu.py: {NOTE}", file=sys.stderr)
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, *PAIR.input_size), dtype=torch.uint8, generator=g)
    targets = torch.randint(0, PAIR.num_classes, (n,), generator=g)
    fast_loader = TensorLoader(
        images, targets, batch, MEAN, STD, augment=True, shuffle=True, drop_last=True,
        device=device, channels_last=True,
    )  # fmt: skip
    augment = [transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip()]
    pil = transforms.Compose([*augment, transforms.ToTensor(), transforms.Normalize(MEAN, STD)])
    ref_loader = DataLoader(
        PILImages(images, targets, pil), batch, shuffle=True, drop_last=True,
        num_workers=workers, pin_memory=device.type == "cuda", persistent_workers=workers > 0,
    )  # fmt: skip
    results = {}
    for method in METHODS:
        results[method] = throughput(
            fast_step(method, device, compile_), fast_loader, warmup, steps, device, batch
        )
        print(f"{method}: {results[method]}", file=sys.stderr)
    results["reference_kd"] = throughput(
        reference_step(device), ref_loader, warmup, steps, device, batch
    )
    ref = results["reference_kd"]["images_per_s"]
    for method in METHODS:
        results[method]["speedup_vs_reference_kd"] = round(results[method]["images_per_s"] / ref, 3)
    record = {
        "environment": environment(),
        "note": NOTE,
        "settings": {
            "pair": PAIR.name, "batch": batch, "synthetic_images": n, "epochs": EPOCHS,
            "projected_train_images": TRAIN_IMAGES, "warmup": warmup, "steps": steps,
            "quick": quick, "device": str(device),
            "fast": {"loader": "TensorLoader on the device", "channels_last": True,
                     "amp": "bf16", "compile": compile_},
            "reference": {"loader": "torchvision DataLoader, PIL transforms",
                          "num_workers": workers, "precision": "fp32", "eager": True,
                          "memory_format": "NCHW"},
        },
        "results": results,
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2))
    print(f"{NOTE}; {PAIR.name}, batch {batch}, {device}")
    for k, v in results.items():
        extra = f", x{v['speedup_vs_reference_kd']:.2f}" if "speedup_vs_reference_kd" in v else ""
        hours = v["projected_epochs_h"]
        print(f"{k:<14}{v['images_per_s']:>10.0f} img/s  {EPOCHS} epochs {hours:.2f} h{extra}")
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
