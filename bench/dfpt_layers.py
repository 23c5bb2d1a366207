"""Where DFPT-KD's step spends the time a KD step does not: per operator, from the profiler, beside
each operator's FLOPs, for both pairs, in the fastest CPU setting (channels_last, bf16 where
native) and in fp32 NCHW. It answers whether DFPT-KD's step time stays within 1.15x of its FLOP
ratio to KD and, where it does not, which operators cost more time than their FLOPs say
(typically the prompt blocks' normalisation and element-wise work, which counts no FLOPs).

Not run by runner.py (it profiles, it does not time for the table): `python bench/dfpt_layers.py
--out runs/bench/dfpt_layers.json` on a quiet machine.
"""

from __future__ import annotations

import torch
from _common import (
    BATCH,
    FP32,
    PAIRS,
    QUICK_BATCH,
    batch,
    build,
    fastest_setting,
    parse_args,
    train_step,
    trainer_malloc,
    write,
)
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

from dfpt_core.engine.runtime import resolve_device

METHODS = ("kd", "dfpt_kd")
STEPS, WARMUP = 10, 3


def family(op: str) -> str:
    """The kind of work an aten operator does (the profiler times the kernels an operator calls,
    the FLOP counter counts the operator: both are summed per family)."""
    name = op.replace("aten::", "").replace("aten.", "")
    if "conv" in name:
        return "convolution"
    if "batch_norm" in name:
        return "batch norm"
    if name in ("addmm", "mm", "bmm", "matmul", "linear"):
        return "matrix product"
    return "other (element-wise, copies, losses, optimizer)"


def family_flops(step) -> dict[str, int]:
    """FLOPs of one step per operator family."""
    with FlopCounterMode(display=False) as counter:
        step()
    out: dict[str, int] = {}
    for op, n in counter.get_flop_counts()["Global"].items():
        out[family(str(op))] = out.get(family(str(op)), 0) + int(n)
    return out


def family_ms(step, steps: int) -> dict[str, float]:
    """Self CPU milliseconds per step of every operator family, over `steps` profiled steps."""
    for _ in range(WARMUP):
        step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    out: dict[str, float] = {}
    for e in prof.key_averages():
        if e.key.startswith("aten::"):
            out[family(e.key)] = out.get(family(e.key), 0.0) + e.self_cpu_time_total / 1000 / steps
    return out


def compare(pair, setting, device, size: int, steps: int) -> dict:
    ms, flops = {}, {}
    for method in METHODS:
        step = train_step(build(method, pair, device), *batch(pair, size, device), setting)
        ms[method] = family_ms(step, steps)
        flops[method] = family_flops(
            train_step(build(method, pair, device), *batch(pair, size, device))
        )
    rows = []
    for fam in sorted(set(ms["kd"]) | set(ms["dfpt_kd"])):
        row = {"family": fam}
        for m in METHODS:
            row[f"{m}_ms"] = ms[m].get(fam, 0.0)
            row[f"{m}_gflop"] = flops[m].get(fam, 0) / 1e9
            row[f"{m}_gflops"] = (
                row[f"{m}_gflop"] / (row[f"{m}_ms"] / 1000) if row[f"{m}_ms"] else None
            )
        row["extra_ms"] = row["dfpt_kd_ms"] - row["kd_ms"]
        rows.append(row)
    rows.sort(key=lambda r: -r["extra_ms"])
    total_ms = {m: sum(ms[m].values()) for m in METHODS}
    total_flops = {m: sum(flops[m].values()) for m in METHODS}
    time_ratio = total_ms["dfpt_kd"] / total_ms["kd"]
    flop_ratio = total_flops["dfpt_kd"] / total_flops["kd"]
    return {
        "setting": setting.name,
        "ms_per_step": total_ms,
        "gflop_per_step": {m: f / 1e9 for m, f in total_flops.items()},
        "time_ratio": time_ratio,
        "flop_ratio": flop_ratio,
        "time_over_flop_ratio": time_ratio / flop_ratio,
        "families": rows,
    }


def main():
    args = parse_args(__doc__)
    device = resolve_device("auto")
    malloc = trainer_malloc(device)
    size, steps = (QUICK_BATCH, 2) if args.quick else (BATCH, STEPS)
    results = {}
    for pair in PAIRS:
        results[pair.name] = {}
        for setting in dict.fromkeys((FP32, fastest_setting(device))):
            r = compare(pair, setting, device, size, steps)
            results[pair.name][setting.name] = r
            print(
                f"{pair.name} {setting.name}: DFPT-KD/KD time {r['time_ratio']:.2f}x, FLOPs "
                f"{r['flop_ratio']:.2f}x -> {r['time_over_flop_ratio']:.2f} (target <= 1.15)"
            )
            for row in r["families"]:
                rate = {m: row[f"{m}_gflops"] for m in METHODS}
                print(
                    f"  {row['family']:48s} KD {row['kd_ms']:7.2f} ms, DFPT-KD "
                    f"{row['dfpt_kd_ms']:7.2f} ms (+{row['extra_ms']:.2f}); GFLOP/s "
                    + ", ".join(f"{m} {v:.0f}" if v else f"{m} -" for m, v in rate.items())
                )
    settings = {"batch": size, "profiled_steps": steps, "threads": torch.get_num_threads()}
    write(args.out, {**settings, "cpu_malloc": malloc}, results)


if __name__ == "__main__":
    main()
