"""Why the book's narrow students stay below the CPU target (their CE step at 45 % of the bf16
GEMM peak where the CPU has native bf16, else 65 % of fp32), measured against the routes the
issue names, each student's CE step in the fastest CPU setting beside the GEMM peak of the same
run:

- batch size: the step at batch 64 (the recipe's), 128 and 256, time per 64 images and the
  fraction of the peak (FLOPs counted at each batch);
- torch.compile as the Trainer applies it (`compile: true`, `module.compile()` on the student):
  the first step (the compile) timed apart, then compiled and eager steps interleaved, batch 64;
- where the time goes, per operator family (profiler self CPU time, `dfpt_layers.family`): each
  family's share of the step, the convolutions' own GFLOP/s, and `conv_only_fraction`, the
  fraction the step would reach if batch norm and the element-wise work took no time.

Not run by runner.py (it compiles, which takes minutes): `python bench/students_limit.py --out
runs/bench/students_limit.json` on a quiet machine. `--quick` (tiny batches, no compile) only
tests that it runs.
"""

from __future__ import annotations

import statistics
import time

import torch
from _common import (
    STUDENTS,
    batch,
    build,
    fastest_setting,
    interleaved_seconds,
    parse_args,
    train_step,
    trainer_malloc,
    write,
)
from dfpt_layers import family_flops, family_ms
from flops import step_flops
from peak import DTYPES, gemm_seconds, gflops_per_s

from dfpt_core.engine.runtime import resolve_device

BATCHES, QUICK_BATCHES = (64, 128, 256), (4, 8)
PEAK_SIZE, QUICK_PEAK_SIZE = 2048, 256


def per_batch(student, setting, device, batches, rounds: int, warmup: int) -> dict:
    """The student's step at each batch size, interleaved: ms, ms per 64 images, GFLOP/s."""
    steps = {b: train_step(build("ce", student, device), *batch(student, b, device), setting)
             for b in batches}  # fmt: skip
    seconds = interleaved_seconds(steps, rounds, warmup, device)
    out = {}
    for b, s in seconds.items():
        flops = step_flops(train_step(build("ce", student, device), *batch(student, b, device)))
        ms = 1e3 * statistics.median(s)
        out[str(b)] = {"step_ms": round(ms, 3), "ms_per_64_images": round(ms * 64 / b, 3),
                       "flops": flops, "gflops_per_s": round(flops / ms / 1e6, 3)}  # fmt: skip
    return out


def compiled(student, setting, device, size: int, rounds: int, warmup: int) -> dict:
    """Eager against `module.compile()` (the Trainer's `compile: true`), interleaved, batch `size`;
    the compiled module's first step, which compiles, timed apart."""
    eager = build("ce", student, device)
    fast = build("ce", student, device)
    fast.student.compile()
    steps = {name: train_step(d, *batch(student, size, device), setting)
             for name, d in (("eager", eager), ("compiled", fast))}  # fmt: skip
    start = time.perf_counter()
    steps["compiled"]()
    first = time.perf_counter() - start
    seconds = interleaved_seconds(steps, rounds, warmup, device)
    ms = {k: round(1e3 * statistics.median(v), 3) for k, v in seconds.items()}
    return {"first_step_s": round(first, 3), "eager_ms": ms["eager"], "compiled_ms": ms["compiled"],
            "speedup": round(ms["eager"] / ms["compiled"], 4)}  # fmt: skip


def families(student, setting, device, size: int, steps: int) -> dict:
    """Each operator family's share of the step and GFLOP/s (profiler self CPU time), and the
    fraction of the step's FLOPs rate that convolutions alone would allow."""
    ms = family_ms(train_step(build("ce", student, device), *batch(student, size, device),
                              setting), steps)  # fmt: skip
    flops = family_flops(train_step(build("ce", student, device), *batch(student, size, device)))
    total_ms = sum(ms.values())
    rows = {fam: {"ms": round(t, 3), "share": round(t / total_ms, 4),
                  "gflops_per_s": round(flops[fam] / t / 1e6, 3) if flops.get(fam) else None}
            for fam, t in sorted(ms.items(), key=lambda kv: -kv[1])}  # fmt: skip
    conv_ms = ms.get("convolution", 0.0)
    bound = sum(flops.values()) / conv_ms / 1e6 if conv_ms else None
    return {"families": rows, "profiled_ms": round(total_ms, 3), "conv_only_gflops_per_s": bound}


def summary(r: dict) -> str:
    """One student's results in a line."""
    batches = ", ".join(
        f"batch {b} {v['ms_per_64_images']:.1f} ms/64 img ({100 * v['peak_fraction']:.1f} %)"
        for b, v in r["by_batch"].items()
    )
    shares = ", ".join(
        f"{k.split(' (')[0]} {100 * v['share']:.0f} %" for k, v in r["families"].items()
    )
    bound = 100 * (r["conv_only_fraction"] or 0)
    line = f"{batches}; time: {shares}; convolutions alone: {bound:.1f} %"
    if c := r.get("compile"):
        line += (
            f"; compiled {c['compiled_ms']:.1f} vs eager {c['eager_ms']:.1f} ms "
            f"(x{c['speedup']:.2f}), first step {c['first_step_s']:.1f} s"
        )
    return line


def main():
    args = parse_args(__doc__)
    device = resolve_device("auto")
    malloc = trainer_malloc(device)
    setting = fastest_setting(device)
    quick = args.quick
    batches = QUICK_BATCHES if quick else BATCHES
    rounds, warmup, steps = (2, 1, 2) if quick else (10, 2, 10)
    n = QUICK_PEAK_SIZE if quick else PEAK_SIZE
    dtype = {setting.precision: DTYPES[setting.precision]}
    peak_s = gemm_seconds(n, dtype, device, rounds, warmup)[setting.precision]
    peak = gflops_per_s(n, statistics.median(peak_s))
    print(f"{setting.name}: GEMM peak ({setting.precision}, {n}x{n}) {peak:.0f} GFLOP/s")
    results = {}
    for student in STUDENTS:
        r = {"by_batch": per_batch(student, setting, device, batches, rounds, warmup)}
        for row in r["by_batch"].values():
            row["peak_fraction"] = round(row["gflops_per_s"] / peak, 4)
        if not quick:
            r["compile"] = compiled(student, setting, device, batches[0], rounds, warmup)
        r.update(families(student, setting, device, batches[0], steps))
        bound = r.pop("conv_only_gflops_per_s")
        r["conv_only_fraction"] = round(bound / peak, 4) if bound else None
        results[student.name] = r
        print(f"{student.name}: {summary(r)}")
    settings = {"setting": setting.name, "precision": setting.precision, "batches": list(batches),
                "rounds": rounds, "warmup": warmup, "profiled_steps": steps, "peak_size": n,
                "threads": torch.get_num_threads(), "compile": not quick}  # fmt: skip
    settings["cpu_malloc"] = malloc
    write(args.out, settings, {"peak_gflops_per_s": peak, "students": results})


if __name__ == "__main__":
    main()
