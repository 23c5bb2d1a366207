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
BENCHMARKS = ("flops", "loader", "memory", "train_step")  # bench/<name>.py, one JSON each
SCHEMA_VERSION = 1
OVERHEAD_TARGET = 1.15  # DFPT-KD/KD time ratio within this factor of its FLOP ratio
LOADER_TARGET = 5.0  # fast loader at least this many times torchvision's images/s
PER_PAIR = ("train_step", "flops", "memory")  # benchmarks whose results are {pair: {method: {}}}
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


def _pair_report(pair: dict, methods: dict) -> dict:
    """One pair's entry: per-method numbers plus the DFPT overhead and the naive speedup."""
    for m in methods.values():
        if "step_ms" in m:
            m["images_per_s"] = round(pair["batch"] / (m["step_ms"] / 1e3), 3)
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
    pairs, methods = {}, {}
    for name in PER_PAIR:
        if name not in records:
            continue
        settings = dict(records[name]["settings"])
        for pair_name, meta in settings.pop("pairs").items():
            pairs[pair_name] = {**meta, "batch": settings["batch"]}
        report["settings"][name] = settings
        for pair_name, result in records[name]["results"].items():
            for method, values in result.items():
                methods.setdefault(pair_name, {}).setdefault(method, {}).update(values)
    if pairs:
        report["pairs"] = {k: _pair_report(meta, methods[k]) for k, meta in pairs.items()}
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


def format_table(report: dict) -> str:
    """bench.json as a compact plain-text table."""
    env = report["environment"]
    lines = [
        f"bench/runner.py{' --quick' if report['quick'] else ''}: torch {env['torch']}, "
        f"{env['device']} ({env['device_name']}), {env['threads']} threads, {env['date']}"
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
