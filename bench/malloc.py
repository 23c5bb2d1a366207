"""What keeping freed memory (the Trainer's default on a CPU, `cpu_malloc: keep`,
`dfpt_core.engine.runtime.keep_freed_memory`) does to a CPU training step, side by side in one
run: the cpu pair's `kd` and `dfpt_kd` steps and the book's students (CE), in the fastest CPU
setting. The setting is process-wide, and a Trainer's process trains one network, so every
entrant is timed alone in a fresh child process, the children alternating between `keep` and
`system` (glibc's own policy), `repeats` children per entrant and mode. Per child: the median
step after warm-up and the minor page faults per step; per entrant and mode, the median over its
children; `speedup` = system / keep.

With `--runs N`, also N pairs of whole cpu-scale runs of the book's pair (resnet20 -> resnet8,
`kd` and `dfpt_kd`, the shipped teacher, the cpu recipe; real Fashion-MNIST), each a `dfpt
train` process, `keep` and `system` alternating: their training-step seconds (metrics.json
`seconds`) and whole-run seconds (with the evaluations, history.csv), and per method and
measure the paired ratio system / keep with its 95 % CI (over the log seconds).

Not run by runner.py: `python bench/malloc.py --out runs/bench/malloc.json [--runs 5]` on a
quiet machine.
"""

from __future__ import annotations

import csv
import json
import math
import multiprocessing
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml
from _common import (
    BATCH,
    PAIRS,
    QUICK_BATCH,
    STUDENTS,
    batch,
    build,
    fastest_setting,
    parse_args,
    train_step,
    trainer_malloc,
    write,
)

from dfpt_core.engine.runtime import resolve_device
from dfpt_core.run.recipes import recipe_train_values
from dfpt_core.workbook.cache import shipped_teacher
from dfpt_core.workbook.stats import paired_difference

MODES = ("keep", "system")
ENTRANTS = {
    **{
        f"{p.name} {m}": (m, p) for p in PAIRS if p.teacher == "resnet20" for m in ("kd", "dfpt_kd")
    },
    **{s.name: ("ce", s) for s in STUDENTS},
}


def child(mode: str, name: str, size: int, rounds: int, warmup: int) -> dict:
    """In a fresh process, as a Trainer's process trains one network: set `mode`, build entrant
    `name`, and time its steps."""
    device = resolve_device("auto")
    applied = trainer_malloc(device) if mode == "keep" else "system"
    setting = fastest_setting(device)
    entrant, pair = ENTRANTS[name]
    step = train_step(build(entrant, pair, device), *batch(pair, size, device), setting)
    ms, faults = [], 0
    for r in range(warmup + rounds):
        f0, t0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
        step()
        t1, f1 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        if r >= warmup:
            ms.append(1e3 * (t1 - t0))
            faults += f1 - f0
    return {"mode": applied, "setting": setting.name, "step_ms": statistics.median(ms),
            "faults_per_step": faults / rounds}  # fmt: skip


def whole_run(method: str, mode: str, repeat: int, folder: Path) -> dict:
    """One cpu-scale run of the book's pair in a `dfpt train` process: training-step and
    whole-run seconds."""
    values = {**recipe_train_values("cpu"), "method": method, "student": "resnet8",
              "teacher": "resnet20", "teacher_checkpoint": str(shipped_teacher("resnet20")),
              "name": f"{method}-{mode}-{repeat}", "out_dir": str(folder), "progress": False,
              "cpu_malloc": mode}  # fmt: skip
    config = folder / f"{values['name']}.yaml"
    config.write_text(yaml.safe_dump(values))
    cmd = [sys.executable, "-m", "dfpt_core.cli", "train", "--config", str(config)]
    subprocess.run(cmd, check=True, capture_output=True)
    run_dir = folder / values["name"]
    epochs = list(csv.DictReader((run_dir / "history.csv").open()))
    return {"train_s": json.loads((run_dir / "metrics.json").read_text())["seconds"],
            "run_s": sum(float(e["seconds"]) for e in epochs)}  # fmt: skip


def whole_runs(repeats: int, methods=("kd", "dfpt_kd")) -> dict:
    """`repeats` pairs of whole runs per method, keep and system alternating; per method and
    measure the seconds and the paired ratio system / keep with its 95 % CI."""
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for method in methods:
            runs = {mode: [] for mode in MODES}
            for r in range(repeats):
                for mode in MODES:
                    runs[mode].append(whole_run(method, mode, r, Path(tmp)))
            out[method] = {}
            for measure in ("train_s", "run_s"):
                keep, system = ([x[measure] for x in runs[m]] for m in MODES)
                d = paired_difference([math.log(x) for x in system], [math.log(x) for x in keep])
                out[method][measure] = {
                    "keep": [round(x, 4) for x in keep], "system": [round(x, 4) for x in system],
                    "ratio": round(math.exp(d["mean"]), 4),
                    "ratio_ci95": [round(math.exp(x), 4) for x in d["ci95"]], "shown": d["shown"],
                }  # fmt: skip
                m = out[method][measure]
                print(f"whole {method} runs, {measure}: system/keep x{m['ratio']:.2f} "
                      f"(95 % CI {m['ratio_ci95'][0]:.2f}-{m['ratio_ci95'][1]:.2f})")  # fmt: skip
    return out


def main():
    args = parse_args(__doc__, lambda p: p.add_argument("--runs", type=int, default=0))
    size = QUICK_BATCH if args.quick else BATCH
    repeats, rounds, warmup = (1, 2, 1) if args.quick else (3, 20, 5)
    names = list(ENTRANTS)[:2] if args.quick else list(ENTRANTS)  # quick: kd and resnet8
    jobs = [(mode, name, size, rounds, warmup)
            for _ in range(repeats) for name in names for mode in MODES]  # fmt: skip
    with multiprocessing.get_context("spawn").Pool(1, maxtasksperchild=1) as pool:
        children = pool.starmap(child, jobs, chunksize=1)
    if children[0]["mode"] != "keep":
        print("bench/malloc.py: keep_freed_memory does not apply here (glibc on Linux only)")
    results = {}
    for name in names:
        row = {}
        for mode in MODES:
            runs = [
                c for c, (m, n, *_) in zip(children, jobs, strict=True) if (m, n) == (mode, name)
            ]
            faults = statistics.mean(c["faults_per_step"] for c in runs)
            row[mode] = {
                "step_ms": round(statistics.median(c["step_ms"] for c in runs), 3),
                "step_ms_children": [round(c["step_ms"], 3) for c in runs],
                "faults_per_step": round(faults, 1),
            }
        row["speedup"] = round(row["system"]["step_ms"] / row["keep"]["step_ms"], 4)
        results[name] = row
        keep, system = row["keep"], row["system"]
        print(
            f"{name:26s} keep {keep['step_ms']:7.1f} ms ({keep['faults_per_step']:.0f} faults"
            f"/step), system {system['step_ms']:7.1f} ms ({system['faults_per_step']:.0f}): "
            f"x{row['speedup']:.2f}"
        )
    settings = {"batch": size, "repeats": repeats, "rounds": rounds, "warmup": warmup,
                "setting": children[0]["setting"], "keep_applies": children[0]["mode"] == "keep",
                "threads": torch.get_num_threads()}  # fmt: skip
    results = {"steps": results}
    if args.runs:
        settings["whole_runs"] = {"repeats": args.runs, "pair": "resnet20-resnet8", "scale": "cpu"}
        results["whole_runs"] = whole_runs(args.runs)
    write(args.out, settings, results)


if __name__ == "__main__":
    main()
