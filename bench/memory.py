"""Peak memory of a training step of every method and of the naive DFPT-KD reference, per pair,
each in a fresh process (forked from a server that has only imported the libraries): after one
warm-up step, how far memory rises during a step above the steady state between steps (weights,
gradients, momentum). CUDA: the allocator's peak (torch.cuda.max_memory_allocated); CPU: the
peak resident set (Linux /proc/self/status VmHWM, reset through /proc/self/clear_refs)."""

import multiprocessing
import os
from pathlib import Path

import torch
from _common import (
    ENTRANTS,
    PAIRS,
    Pair,
    batch,
    build,
    pair_settings,
    parse_args,
    train_step,
    write,
)

from dfpt_core.engine.runtime import resolve_device

PROC = Path("/proc/self")


def _status_mib(field: str) -> float:
    """A kB field of /proc/self/status (VmRSS, VmHWM) in MiB."""
    line = next(x for x in (PROC / "status").read_text().splitlines() if x.startswith(field))
    return int(line.split()[1]) / 1024


def _reset_peak(device: torch.device) -> float:
    """Restart peak tracking at the current usage; returns that usage in MiB."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.memory_allocated(device) / 2**20
    (PROC / "clear_refs").write_text("5")  # VmHWM := VmRSS
    return _status_mib("VmRSS")


def _peak(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return _status_mib("VmHWM")


def peak_mib(entrant: str, pair: Pair, size: int, steps: int) -> float:
    """Runs in the child: build, one warm-up step, then the rise in MiB over `steps` steps."""
    device = resolve_device("auto")
    if device.type != "cuda" and not (PROC / "clear_refs").exists():
        raise RuntimeError("memory needs CUDA or Linux's /proc/self/clear_refs")
    step = train_step(build(entrant, pair, device), *batch(pair, size, device))
    step()
    base = _reset_peak(device)
    for _ in range(steps):
        step()
    return _peak(device) - base


def main():
    args = parse_args(__doc__)
    device = resolve_device("auto")
    settings = {**pair_settings(args.quick), "warmup": 1, "steps": 1 if args.quick else 2}
    settings["measure"] = "cuda_max_allocated" if device.type == "cuda" else "linux_vmhwm"
    jobs = [(e, p, settings["batch"], settings["steps"]) for p in PAIRS for e in ENTRANTS]
    # glibc: serve every block >= 128 KiB by mmap and unmap it when freed (fixing the threshold
    # turns off its growth), so the children's resident set follows their live tensors
    os.environ["MALLOC_MMAP_THRESHOLD_"] = str(128 * 1024)
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", "dfpt_core.methods", "dfpt_core.models"])
    with ctx.Pool(processes=1, maxtasksperchild=1) as pool:
        peaks = pool.starmap(peak_mib, jobs, chunksize=1)
    results = {p.name: {} for p in PAIRS}
    for (entrant, pair, *_), peak in zip(jobs, peaks, strict=True):
        results[pair.name][entrant] = {"peak_mib": round(peak, 1)}
    write(args.out, settings, results)


if __name__ == "__main__":
    main()
