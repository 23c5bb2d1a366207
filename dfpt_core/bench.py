"""Run the benchmark scripts in bench/ (each writes one JSON file) and collect a summary."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from .paths import REPO_ROOT, runs_dir

BENCH_DIR = REPO_ROOT / "bench"


def list_benchmarks() -> list[str]:
    return sorted(p.stem for p in BENCH_DIR.glob("*.py") if not p.name.startswith("_"))


def run_benchmarks(
    out: Path | None = None, only: list[str] | None = None, quick: bool = False
) -> Path:
    """Run each benchmark in its own process (clean memory peaks) into `out/<name>.json`,
    then write `out/summary.json`. Raises RuntimeError naming the benchmarks that failed."""
    out = Path(out or runs_dir() / "bench")
    out.mkdir(parents=True, exist_ok=True)
    names = list_benchmarks()
    unknown = sorted(set(only or []) - set(names))
    if unknown:
        raise ValueError(f"unknown benchmark(s) {unknown}; available: {', '.join(names)}")
    summary, failed = {}, []
    for name in only or names:
        start = time.time()
        cmd = [sys.executable, str(BENCH_DIR / f"{name}.py"), "--out", str(out / f"{name}.json")]
        proc = subprocess.run(cmd + (["--quick"] if quick else []), cwd=REPO_ROOT)
        summary[name] = {"ok": proc.returncode == 0, "seconds": round(time.time() - start, 1)}
        if proc.returncode == 0:
            summary[name]["results"] = json.loads((out / f"{name}.json").read_text())
        else:
            failed.append(name)
    path = out / "summary.json"
    path.write_text(json.dumps(summary, indent=2))
    if failed:
        raise RuntimeError(f"benchmarks failed: {', '.join(failed)} (see output above)")
    return path
