"""Run the benchmark scripts in bench/ (each in its own process, each writing one JSON file),
combine them into `bench.json` with the derived ratios (schema: bench/README.md), and print
that as a plain-text table. `make bench` runs it:

    python bench/runner.py [--quick] [--only train_step flops] [--out runs/bench]

(`--quick`: a smoke run, two scripts at a time.)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import torch

from dfpt_core.engine.runtime import device_name, resolve_device, versions

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
# bench/<name>.py, one JSON each
BENCHMARKS = ("flops", "loader", "memory", "peak", "peer_step", "train_step")
SCHEMA_VERSION = 2  # 2: peak, by_setting (GFLOP/s, fraction of peak), students, peer, cpu_target
OVERHEAD_TARGET = 1.15  # DFPT-KD/KD time ratio within this factor of its FLOP ratio
LOADER_TARGET = 5.0  # fast loader at least this many times torchvision's images/s
PER_PAIR = ("train_step", "flops", "memory")  # benchmarks whose results are {pair: {method: {}}}
STUDENTS_GROUP = "students"  # their group of the book's students alone (bench/_common.py)
#: the issue's CPU target for the book's (cpu-scale) students: their CE step's achieved GFLOP/s
#: as a fraction of the GEMM peak, in bf16 (channels_last) where the CPU has native bf16, else
#: in fp32 (channels_last)
CPU_TARGETS = {"bf16": ("bf16_channels_last", 0.45), "fp32": ("fp32_channels_last", 0.65)}
PEER_TARGET = 1.0  # ours (same settings) at most this times the peer-style step's time
#: the per-method table: (header, field, width, format, scale)
COLUMNS = (
    ("step ms", "step_ms", 10, ".1f", 1),
    ("img/s", "images_per_s", 9, ".0f", 1),
    ("GFLOP/step", "flops", 12, ".2f", 1e-9),
    ("peak MiB", "peak_mib", 10, ".1f", 1),
)


def environment() -> dict:
    """Versions, device, threads and the date (UTC) of a benchmark run."""
    device = resolve_device("auto")
    return {
        **versions(),
        "device": str(device),
        "device_name": device_name(device),
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "cpus": os.cpu_count(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def run_benchmarks(
    out: Path | None = None, only: list[str] | None = None, quick: bool = False
) -> Path:
    """Run each benchmark in its own process into `out/<name>.json`, then write and return
    `out/bench.json`. Raises RuntimeError naming the benchmarks that failed (after writing
    bench.json with the others)."""
    out = Path(out or Path(os.environ.get("DFPT_RUNS_DIR", REPO_ROOT / "runs")) / "bench")
    out.mkdir(parents=True, exist_ok=True)
    names = list(BENCHMARKS)
    unknown = sorted(set(only or []) - set(names))
    if unknown:
        raise ValueError(f"unknown benchmark(s) {unknown}; available: {', '.join(names)}")
    selected = only or names

    def run_one(name: str) -> dict:
        start = time.time()
        cmd = [sys.executable, str(BENCH_DIR / f"{name}.py"), "--out", str(out / f"{name}.json")]
        proc = subprocess.run(cmd + (["--quick"] if quick else []), cwd=REPO_ROOT)
        ok = proc.returncode == 0
        print(f"bench {name}: {'ok' if ok else 'FAILED'}", file=sys.stderr)
        return {"ok": ok, "seconds": round(time.time() - start, 1)}

    # a full run times one benchmark at a time, alone; --quick only checks that everything runs
    # (its numbers are not results): two of its single-threaded scripts run side by side
    with ThreadPoolExecutor(max_workers=2 if quick else 1) as pool:
        runs = dict(zip(selected, pool.map(run_one, selected), strict=True))
    records = {
        name: json.loads((out / f"{name}.json").read_text())
        for name, run in runs.items()
        if run["ok"]
    }
    path = out / "bench.json"
    path.write_text(json.dumps(combine(records, runs, quick), indent=2))
    failed = [name for name, run in runs.items() if not run["ok"]]
    if failed:
        raise RuntimeError(f"benchmarks failed: {', '.join(failed)} (see output above)")
    return path


def _ratio(a: float, b: float) -> float:
    return round(a / b, 4)


def _sig(x: float) -> float:
    """`x` to 5 significant digits."""
    return float(f"{x:.5g}")


def _row(m: dict, batch: int, peak: dict, precisions: dict) -> dict:
    """One method's (or student's) numbers, completed in place: images/s, and per setting
    images/s, achieved GFLOP/s (the step's FLOPs / its median time) and that as a fraction of
    the GEMM peak of the setting's precision."""
    for entry in (m, *m.get("by_setting", {}).values()):
        if "step_ms" in entry:
            entry["images_per_s"] = round(batch / (entry["step_ms"] / 1e3), 3)
    for name, entry in m.get("by_setting", {}).items():
        if "step_ms" in entry and "flops" in m:
            entry["gflops_per_s"] = _sig(m["flops"] / entry["step_ms"] / 1e6)
            peak_gflops = peak.get(precisions[name], {}).get("gflops_per_s")
            if peak_gflops:
                entry["peak_fraction"] = _sig(entry["gflops_per_s"] / peak_gflops)
    return m


def _pair_report(pair: dict, methods: dict, peak: dict, precisions: dict) -> dict:
    """One pair's entry: per-method numbers plus the DFPT overhead and the naive speedup."""
    for m in methods.values():
        _row(m, pair["batch"], peak, precisions)
    out = {**pair, "methods": methods}
    kd, ours, naive = (methods.get(k, {}) for k in ("kd", "dfpt_kd", "dfpt_kd_naive"))
    if all("step_ms" in m and "flops" in m for m in (kd, ours)):
        time_ratio = _ratio(ours["step_ms"], kd["step_ms"])
        flop_ratio = _ratio(ours["flops"], kd["flops"])
        per_flop = _ratio(time_ratio, flop_ratio)
        out["dfpt_overhead"] = {
            "time_ratio": time_ratio,
            "flop_ratio": flop_ratio,
            "time_per_flop_ratio": per_flop,
            "target": OVERHEAD_TARGET,
            "pass": per_flop <= OVERHEAD_TARGET,
        }
    fields = {"step_ms": "time_ratio", "flops": "flop_ratio", "peak_mib": "memory_ratio"}
    speedup = {k: _ratio(naive[f], ours[f]) for f, k in fields.items() if f in naive and f in ours}
    if speedup:
        out["naive_speedup"] = speedup
    return out


def combine(records: dict[str, dict], runs: dict[str, dict], quick: bool) -> dict:
    """bench.json from the per-benchmark records of one run (see bench/README.md)."""
    report = {
        "schema_version": SCHEMA_VERSION,
        "quick": quick,
        # as the benchmark processes saw it (thread settings come from their environment)
        "environment": next(iter(records.values()))["environment"] if records else environment(),
        "benchmarks": runs,
        "settings": {},
    }
    peak = {}
    if "peak" in records:
        report["settings"]["peak"] = records["peak"]["settings"]
        report["peak"] = peak = records["peak"]["results"]
    pairs, students, methods = {}, {}, {}
    for name in PER_PAIR:
        if name not in records:
            continue
        settings = dict(records[name]["settings"])
        for pair_name, meta in settings.pop("pairs").items():
            pairs[pair_name] = {**meta, "batch": settings["batch"]}
        for student, meta in settings.pop("students", {}).items():
            students[student] = {**meta, "batch": settings["batch"], "method": "ce"}
        report["settings"][name] = settings
        for pair_name, result in records[name]["results"].items():
            for method, values in result.items():
                methods.setdefault(pair_name, {}).setdefault(method, {}).update(values)
    step_settings = report["settings"].get("train_step", {}).get("step_settings", {})
    precisions = {k: v["precision"] for k, v in step_settings.items()}
    if pairs:
        report["pairs"] = {
            k: _pair_report(meta, methods[k], peak, precisions) for k, meta in pairs.items()
        }
    rows = methods.get(STUDENTS_GROUP, {})
    if students and rows:
        report["students"] = {
            k: {**meta, **_row(rows[k], meta["batch"], peak, precisions)}
            for k, meta in students.items()
        }
        if report["environment"]["device"] == "cpu" and "native_bf16" in peak:
            report["cpu_target"] = _cpu_target(report["students"], peak["native_bf16"])
    if "peer_step" in records:
        report["settings"]["peer_step"] = records["peer_step"]["settings"]
        report["peer"] = _peer_report(records["peer_step"])
    if "loader" in records:
        report["settings"]["loader"] = records["loader"]["settings"]
        results = records["loader"]["results"]
        fast, tv = results["fast"]["images_per_s"], results["torchvision"]["images_per_s"]
        ratio = _ratio(fast, tv)
        report["loader"] = {
            "fast_images_per_s": fast,
            "torchvision_images_per_s": tv,
            "ratio": ratio,
            "target": LOADER_TARGET,
            "pass": ratio >= LOADER_TARGET,
        }
    return report


def _cpu_target(students: dict, native_bf16: bool) -> dict:
    """The issue's CPU target, per student: its CE step's fraction of the peak in the setting
    the target names, and whether it reaches the target."""
    precision = "bf16" if native_bf16 else "fp32"
    setting, target = CPU_TARGETS[precision]
    out = {"precision": precision, "setting": setting, "target": target, "students": {}}
    for name, student in students.items():
        fraction = student["by_setting"].get(setting, {}).get("peak_fraction")
        if fraction is not None:
            out["students"][name] = {"peak_fraction": fraction, "pass": fraction >= target}
    return out


def _peer_report(record: dict) -> dict:
    """The peer-style comparison: per entrant ms and img/s, ours / peer time ratios."""
    settings, steps = record["settings"], record["results"]
    for entry in steps.values():
        entry["images_per_s"] = round(settings["batch"] / (entry["step_ms"] / 1e3), 3)
    out = {"pair": settings["pair"]["name"], "batch": settings["batch"]}
    out.update(fastest=settings["fastest"]["name"], steps=steps)
    peer = steps["peer"]["step_ms"]
    out["ours_fp32_ratio"] = _ratio(steps["ours_fp32"]["step_ms"], peer)
    out["ours_fastest_ratio"] = _ratio(steps["ours_fastest"]["step_ms"], peer)
    out["teacher_ratio"] = _ratio(
        steps["teacher_ours_fp32"]["step_ms"], steps["teacher_peer"]["step_ms"]
    )
    out["target"] = PEER_TARGET
    out["pass"] = out["ours_fp32_ratio"] <= PEER_TARGET
    return out


def _setting_table(rows: dict, names: list[str]) -> list[str]:
    """Per row and setting: ms, achieved GFLOP/s and % of the matching peak."""
    lines = [f"{'':<14}" + "".join(f"{n:>26}" for n in names)]
    lines.append(f"{'':<14}" + f"{'ms  GFLOP/s  %peak':>26}" * len(names))
    for row, m in rows.items():
        cells = []
        for n in names:
            e = m.get("by_setting", {}).get(n, {})
            if "step_ms" not in e:
                cells.append(f"{'skipped' if 'skipped' in e else '-':>26}")
                continue
            gf, frac = e.get("gflops_per_s"), e.get("peak_fraction")
            gf = f"{gf:9.1f}" if gf is not None else f"{'-':>9}"
            frac = f"{100 * frac:6.1f}%" if frac is not None else f"{'-':>7}"
            cells.append(f"{e['step_ms']:10.1f}{gf}{frac}")
        lines.append(f"{row:<14}" + "".join(cells))
    return lines


def format_table(report: dict) -> str:
    """bench.json as a compact plain-text table."""
    env = report["environment"]
    lines = [
        f"bench/runner.py{' --quick' if report['quick'] else ''}: torch {env['torch']}, "
        f"{env['device']} ({env['device_name']}), {env['threads']} threads, {env['date']}"
    ]
    step_settings = list(report["settings"].get("train_step", {}).get("step_settings", {}))
    if "peak" in report:
        p = report["peak"]
        bf16 = p["bf16"]
        bf16 = f"{bf16['gflops_per_s']:.1f}" if "gflops_per_s" in bf16 else "skipped (no native)"
        lines += [
            "",
            f"GEMM peak ({report['settings']['peak']['size']}^2 matmul): fp32 "
            f"{p['fp32']['gflops_per_s']:.1f} GFLOP/s, bf16 {bf16} GFLOP/s",
        ]
    for name, pair in report.get("pairs", {}).items():
        size = "x".join(map(str, pair["input_size"]))
        lines += [
            "",
            f"{name}: {pair['num_classes']} classes, {size}, batch {pair['batch']}",
            f"{'method':<14}" + "".join(f"{head:>{width}}" for head, _, width, _, _ in COLUMNS),
        ]
        for method, m in pair["methods"].items():
            cells = (
                format(m[field] * scale, f"{width}{fmt}") if field in m else "-".rjust(width)
                for _, field, width, fmt, scale in COLUMNS
            )
            lines.append(f"{method:<14}" + "".join(cells))
        if step_settings:
            lines += _setting_table(pair["methods"], step_settings)
        if "dfpt_overhead" in pair:
            o = pair["dfpt_overhead"]
            lines.append(
                f"DFPT-KD/KD: time x{o['time_ratio']:.2f}, FLOPs x{o['flop_ratio']:.2f}, "
                f"time/FLOPs {o['time_per_flop_ratio']:.2f} "
                f"(target within {o['target']}x: {'pass' if o['pass'] else 'FAIL'})"
            )
        if "naive_speedup" in pair:
            names = {"time_ratio": "time", "flop_ratio": "FLOPs", "memory_ratio": "memory"}
            parts = [f"{names[k]} x{v:.2f}" for k, v in pair["naive_speedup"].items()]
            lines.append(f"naive/DFPT-KD: {', '.join(parts)}")
    if "students" in report:
        first = next(iter(report["students"].values()))
        size = "x".join(map(str, first["input_size"]))
        lines += [
            "",
            f"the book's students alone (CE): {first['num_classes']} classes, {size}, "
            f"batch {first['batch']}",
        ]
        lines += _setting_table(report["students"], step_settings)
    if "cpu_target" in report:
        c = report["cpu_target"]
        parts = [
            f"{k} {100 * v['peak_fraction']:.1f}% {'pass' if v['pass'] else 'FAIL'}"
            for k, v in c["students"].items()
        ]
        lines.append(
            f"target: >= {100 * c['target']:.0f}% of the {c['precision']} peak in "
            f"{c['setting']}: {', '.join(parts)}"
        )
    if "peer" in report:
        pe = report["peer"]
        lines += ["", f"peer-style KD step, {pe['pair']}, batch {pe['batch']} (ms):"]
        lines.append("  ".join(f"{k} {v['step_ms']:.1f}" for k, v in pe["steps"].items()))
        lines.append(
            f"ours fp32 / peer x{pe['ours_fp32_ratio']:.2f} (target <= {pe['target']}: "
            f"{'pass' if pe['pass'] else 'FAIL'}), ours {pe['fastest']} / peer "
            f"x{pe['ours_fastest_ratio']:.2f}, teacher forward ours/peer x{pe['teacher_ratio']:.2f}"
        )
    if "loader" in report:
        lo = report["loader"]
        lines += [
            "",
            f"loader: fast {lo['fast_images_per_s']:.0f} img/s, torchvision "
            f"{lo['torchvision_images_per_s']:.0f} img/s: x{lo['ratio']:.1f} "
            f"(target >= {lo['target']:.0f}x: {'pass' if lo['pass'] else 'FAIL'})",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="speed and memory benchmarks (JSON)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (runs/bench)")
    parser.add_argument("--only", nargs="+", help=f"benchmark names: {', '.join(BENCHMARKS)}")
    parser.add_argument("--quick", action="store_true", help="smoke run: batch 4, fewer reps")
    args = parser.parse_args(argv)
    try:
        path = run_benchmarks(args.out, only=args.only, quick=args.quick)
    except (ValueError, RuntimeError) as e:
        print(f"bench: error: {e}", file=sys.stderr)
        return 2
    print(format_table(json.loads(path.read_text())))
    print(f"\nwritten to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
