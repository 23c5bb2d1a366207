"""Is bf16 autocast accurate enough to be the `cpu` scale's default? (issue: training speed)

The book's cpu pair (the shipped resnet20 teacher, a resnet8 student, 5,000 Fashion-MNIST
training images, 4 epochs), KD and DFPT-KD, each trained in fp32 and under bf16 autocast with
the same SEEDS; every run scored at its last epoch on the full test set (10,000 images).
The question is whether the precision moves a run's accuracy by more than seeds do: the paired
difference bf16 - fp32 with its 95 % t interval, beside the seed-to-seed standard deviation,
and the training time of both (one thread per worker, two workers on 2 cores; the ratio is the
honest number, the seconds depend on the machine).

    python scripts/precision_study.py --jobs 2     # writes results/precision_study.json
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch

import dfpt_core.workbook as nb
from dfpt_core.engine.runtime import native_bf16
from dfpt_core.workbook.checkout import REPO_ROOT
from dfpt_core.workbook.parallel import run_parallel
from dfpt_core.workbook.stats import describe, paired_difference
from dfpt_core.workbook.study import study_setup, write_study

SEEDS = (0, 1, 2, 3, 4)
METHODS = ("kd", "dfpt_kd")
PRECISIONS = ("none", "bf16")  # TrainConfig.amp


def context() -> tuple[dict, nb.Teacher, Path]:
    return study_setup("cpu", "precision-study")


def train_one(method: str, amp: str, seed: int) -> dict:
    """One run: its last-epoch test top-1 and its training seconds."""
    params, teacher, cache = context()
    common = {**nb.preset_common(params), "limit_test": None, "seed": seed, "amp": amp}
    run = nb.distil(method, teacher, params["student"], cache, common, params["student_epochs"])
    seconds = json.loads((run.run_dir / "metrics.json").read_text())["seconds"]
    return {"student_top1": run.final["student_top1"], "seconds": seconds, "run": run.run_dir.name}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1, help="runs at once (worker processes)")
    parser.add_argument("--out", default=REPO_ROOT / "results" / "precision_study.json", type=Path)
    args = parser.parse_args()
    params, teacher, _ = context()
    tasks = [(m, amp, s) for s in SEEDS for m in METHODS for amp in PRECISIONS]
    if args.jobs > 1:
        finished = run_parallel(train_one, tasks, args.jobs)
    else:
        finished = ((task, train_one(*task)) for task in tasks)
    runs: dict = {}
    for (method, amp, seed), done in finished:
        if isinstance(done, Exception):
            raise done
        runs.setdefault(method, {}).setdefault(amp, {})[seed] = done
        print(f"{method} {amp} seed {seed}: {done['student_top1']:.2f}", flush=True)
    result = {}
    for method, by_amp in runs.items():
        top1 = {amp: [by_amp[amp][s]["student_top1"] for s in SEEDS] for amp in PRECISIONS}
        secs = {
            amp: statistics.fmean(by_amp[amp][s]["seconds"] for s in SEEDS) for amp in PRECISIONS
        }
        d = paired_difference(top1["bf16"], top1["none"])
        result[method] = {
            "top1": {amp: {"mean": statistics.fmean(v), "std": statistics.stdev(v), "values": v}
                     for amp, v in top1.items()},
            "bf16 - fp32": {**d, "text": describe(d)},
            "seconds": secs,
            "speedup": secs["none"] / secs["bf16"],
        }  # fmt: skip
        print(
            f"{method}: bf16 - fp32 {describe(d)}; seed std fp32 "
            f"{result[method]['top1']['none']['std']:.2f}; training {secs['none']:.0f} s -> "
            f"{secs['bf16']:.0f} s ({result[method]['speedup']:.2f}x)"
        )
    record = {
        "about": "bf16 autocast vs fp32 at cpu scale (scripts/precision_study.py): last-epoch "
        "top-1 on the full Fashion-MNIST test set, paired by seed; training seconds per run",
        "teacher": params["teacher"],
        "student": params["student"],
        "epochs": params["student_epochs"],
        "native_bf16": native_bf16(),
        "threads_per_run": torch.get_num_threads(),
        "methods": result,
        "runs": runs,
    }
    write_study(args.out, record)
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
