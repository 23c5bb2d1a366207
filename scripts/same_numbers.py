"""Proof that a refactoring kept behaviour: the same seed gives the same numbers.

Trains three `cpu`-scale runs of the book's pair (ce, kd and dfpt_kd: resnet8 from the shipped
resnet20 teacher, the preset's data, epochs and seed) into a fresh folder, and collects the
metrics.json of every notebook of a smoke-scale book run (`dfpt book --scale smoke`), all
without timings. `--write FILE` records them; `--compare FILE` re-runs them and lists every
value that differs (exit 1), or says that all are identical.

    OMP_NUM_THREADS=2 python scripts/same_numbers.py --write results/same_numbers.json
    OMP_NUM_THREADS=2 python scripts/same_numbers.py --compare results/same_numbers.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import dfpt_core.workbook as nb
from dfpt_core.workbook.book import list_notebooks, load_params

METHODS = ("ce", "kd", "dfpt_kd")
TIMING = ("seconds", "time", "elapsed", "wall", "per_s", "_ms", "versions", "dir", "path")


def untimed(value):
    """`value` without timings, versions and paths (which differ between identical runs)."""
    if isinstance(value, dict):
        return {k: untimed(v) for k, v in value.items() if not any(t in k for t in TIMING)}
    if isinstance(value, list):
        return [untimed(v) for v in value]
    return value


def cpu_runs(cache: Path) -> dict:
    """{method: {"history": [...], "best": {...}}} of the three cpu-scale runs."""
    params = load_params("cpu")
    common = nb.preset_common(params)
    teacher = nb.teacher(params["teacher"], cache, common, params["teacher_epochs"])
    assert teacher.run is not None and "teachers" in str(teacher.run.run_dir), "not shipped"
    student, epochs = params["student"], params["student_epochs"]
    out = {}
    for method in METHODS:
        if method == "ce":
            run = nb.cached_run(
                f"{student}-ce", cache, method="ce", student=student, epochs=epochs, **common
            )
        else:
            run = nb.distil(method, teacher, student, cache, common, epochs)
        out[method] = {"history": untimed(run.history), "best": untimed(run.best)}
        print(f"{method}: best top-1 {run.best['student_top1']:.2f}", flush=True)
    return out


def smoke_book(runs_dir: Path) -> dict:
    """{notebook: its metrics.json} of a fresh smoke-scale book run."""
    subprocess.run(  # a failed notebook shows as a missing record (None) in the comparison
        [sys.executable, "-m", "dfpt_core.cli", "book", "--scale", "smoke"],
        check=False,
        env={**os.environ, "DFPT_RUNS_DIR": str(runs_dir)},
    )
    found = {}
    for path in list_notebooks():
        metrics = runs_dir / "book-smoke" / path.stem / "metrics.json"
        found[path.stem] = untimed(json.loads(metrics.read_text())) if metrics.is_file() else None
    return found


def differences(before, after, where="") -> list[str]:
    if isinstance(before, dict) and isinstance(after, dict):
        keys = sorted(set(before) | set(after))
        return [d for k in keys for d in differences(before.get(k), after.get(k), f"{where}/{k}")]
    if isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        return [
            d
            for i, (a, b) in enumerate(zip(before, after, strict=True))
            for d in differences(a, b, f"{where}[{i}]")
        ]
    same = before == after or (before != before and after != after)  # NaN equals NaN here
    return [] if same else [f"{where}: {before!r} -> {after!r}"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", type=Path)
    mode.add_argument("--compare", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        numbers = {"cpu": cpu_runs(Path(tmp) / "cache"), "smoke_book": smoke_book(Path(tmp))}
    if args.write:
        args.write.write_text(json.dumps(numbers, indent=1, sort_keys=True))
        print(f"wrote {args.write}")
        return 0
    diffs = differences(json.loads(args.compare.read_text()), json.loads(json.dumps(numbers)))
    for d in diffs:
        print("DIFFERS", d)
    print(f"{len(diffs)} values differ" if diffs else "all values identical")
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main())
