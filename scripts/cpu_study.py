"""The `cpu`-scale study: every method on the book's cpu pair, three seeds, one results table.

The pair, data and schedule are the book's `cpu` scale (`load_params("cpu")`): the shipped
teacher (data/runs/cpu/, see scripts/ship_cpu_runs.py) distilled into the student on
real Fashion-MNIST, each run scored on the full test set (10,000 images). Every method runs with
seeds 0, 1, 2 (data order, augmentation, subset, initialisation); the teacher is the same for all.
Runs are cached under runs/cpu-study/ (an interrupted study resumes where it stopped); `--jobs N`
trains N seeds at once in worker processes (each with its share of the cores, or spread over
`--devices`), and a call over all seeds collects them:

    python scripts/cpu_study.py --jobs 3   # writes results/cpu_study.json and the table
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
from pathlib import Path

import torch

import dfpt_core
import dfpt_core.workbook as nb
from dfpt_core.engine.trainer import NonFiniteLossError
from dfpt_core.methods.dkd import dkd_recipe
from dfpt_core.workbook.cache import shipped_manifest
from dfpt_core.workbook.checkout import REPO_ROOT
from dfpt_core.workbook.parallel import run_parallel
from dfpt_core.workbook.study import study_setup

SEEDS = (0, 1, 2)
METHODS = ("ce", "kd", "dkd", "fitnet", "takd", "dgkd", "dfpt_kd", "dfpt_kdt")
FITNET_CLIP = 1.0  # gradient-norm clipping over every parameter, the projections included


def fitnet_unclipped(teacher: nb.Teacher, student: str, cache: Path, common: dict, epochs: int):
    """FitNet's published recipe (hint weight 100) without gradient clipping: the run's last
    epoch record, or the error if it diverges (the study then runs FitNet clipped, see
    FITNET_CLIP)."""
    try:
        return nb.distil("fitnet", teacher, student, cache, common, epochs).best
    except NonFiniteLossError as e:
        return {"diverged": str(e).split("; the last")[0]}


def train_seed(params: dict, seed: int, teacher: nb.Teacher, cache: Path) -> dict[str, dict]:
    """Every method for one seed: {method: the record of its last epoch}, plus FitNet's
    published recipe without clipping ("fitnet_unclipped": its record or how it diverged)."""
    student, epochs = params["student"], params["student_epochs"]
    common = {**study_common(params), "seed": seed}
    clipped = {**common, "clip_grad_norm": FITNET_CLIP}
    runs = {
        "ce": nb.cached_run(
            f"{student}-ce", cache, method="ce", student=student, epochs=epochs, **common
        )
    }
    for method in ("kd", "dfpt_kd", "dfpt_kdt"):
        runs[method] = nb.distil(method, teacher, student, cache, common, epochs)
    runs["fitnet"] = nb.distil("fitnet", teacher, student, cache, clipped, epochs)
    runs["dkd"] = nb.distil(
        "dkd", teacher, student, cache, common, epochs, **dkd_recipe(teacher.arch, student, epochs)
    )
    assistant = nb.distil("kd", teacher, params["baselines_assistant"], cache, common, epochs)
    guided = dict(
        student=student,
        teacher=teacher.arch,
        teacher_checkpoint=str(teacher.checkpoint),
        networks={
            "assistants": [
                {"arch": params["baselines_assistant"], "checkpoint": str(assistant.checkpoint())}
            ]
        },
        epochs=epochs,
        **common,
    )
    for method in ("takd", "dgkd"):
        runs[method] = nb.cached_run(
            f"{student}-from-{teacher.arch}-{method}", cache, method=method, **guided
        )
    records = {
        m: {
            **runs[m].best,
            "run": runs[m].run_dir.name,
            "seconds": json.loads((runs[m].run_dir / "metrics.json").read_text())["seconds"],
        }
        for m in METHODS
    }
    records["fitnet_unclipped"] = fitnet_unclipped(teacher, student, cache, common, epochs)
    return records


def context(scale: str) -> tuple[dict, nb.Teacher, Path]:
    return study_setup(scale, "cpu-study")


def train_one_seed(scale: str, seed: int) -> dict[str, dict]:
    """`train_seed` in this process or a --jobs worker."""
    params, teacher, cache = context(scale)
    return train_seed(params, seed, teacher, cache)


def study_common(params: dict) -> dict:
    """The book's cpu settings, scored on the full test set."""
    return {**nb.preset_common(params), "limit_test": None}


def summarise(per_seed: dict[int, dict], teacher_top1: float) -> dict:
    """Mean and sample std over seeds of the last-epoch top-1, the teacher-student gap and the
    gain over the student trained alone (paired by seed)."""

    def stats(values):
        return {"mean": statistics.mean(values), "std": statistics.stdev(values), "values": values}

    table = {}
    for method in METHODS:
        top1 = [per_seed[s][method]["student_top1"] for s in sorted(per_seed)]
        alone = [per_seed[s]["ce"]["student_top1"] for s in sorted(per_seed)]
        table[method] = {
            "top1": stats(top1),
            "gap": stats([teacher_top1 - t for t in top1]),
            "gain": stats([t - a for t, a in zip(top1, alone, strict=True)]),
            "seconds": statistics.mean(per_seed[s][method]["seconds"] for s in per_seed),
        }
    return table


def markdown(table: dict, teacher: str, teacher_top1: float, student: str) -> str:
    lines = [
        f"| method | top-1 % (mean ± std, 3 seeds) | gap to teacher ({teacher}, "
        f"{teacher_top1:.2f} %) | gain over {student} alone | s/run, 3 on 2 cores |",
        "|---|---|---|---|---|",
    ]
    for method, row in table.items():
        top1, gap, gain = row["top1"], row["gap"], row["gain"]
        label = f"{method} (clip {FITNET_CLIP:g})" if method == "fitnet" else method
        lines.append(
            f"| {label} | {top1['mean']:.2f} ± {top1['std']:.2f} | "
            f"{gap['mean']:.2f} | {gain['mean']:+.2f} ± {gain['std']:.2f} | "
            f"{row['seconds']:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    parser.add_argument("--scale", default="cpu", choices=nb.SCALES, help="the book's preset")
    parser.add_argument("--jobs", type=int, default=1, help="seeds at once (worker processes)")
    parser.add_argument("--devices", nargs="+", help="CUDA devices the workers share out")
    parser.add_argument("--out", default=REPO_ROOT / "results" / "cpu_study.json", type=Path)
    args = parser.parse_args()
    params, teacher, _ = context(args.scale)
    if teacher.run is None or teacher.run.run_dir.name not in shipped_manifest().get("runs", {}):
        print(f"note: teacher {params['teacher']} is not a shipped one: {teacher.checkpoint}")
    tasks = [(args.scale, seed) for seed in args.seeds]
    if args.jobs > 1 or args.devices:
        finished = run_parallel(train_one_seed, tasks, args.jobs, args.devices)
    else:
        finished = ((task, train_one_seed(*task)) for task in tasks)
    per_seed = {}
    for (_, seed), records in finished:
        if isinstance(records, Exception):
            raise records
        per_seed[seed] = records
    per_seed = dict(sorted(per_seed.items()))
    if sorted(args.seeds) != list(SEEDS):
        return  # a partial call trains; the call over all seeds reports
    teacher_top1 = nb.evaluate_checkpoint(teacher.arch, teacher.checkpoint, study_common(params))[
        "student_top1"
    ]
    table = summarise(per_seed, teacher_top1)
    record = {
        "about": "cpu-scale study (scripts/cpu_study.py): test top-1 at the last epoch on the full "
        "Fashion-MNIST test set, mean and sample std over seeds",
        "dataset": params["dataset"],
        "limit_train": params["limit_train"],
        "test_examples": "all (10000)",
        "teacher": params["teacher"],
        "teacher_run": teacher.run.run_dir.name if teacher.run else str(teacher.checkpoint),
        "teacher_top1": teacher_top1,
        "student": params["student"],
        "assistant": params["baselines_assistant"],
        "epochs": params["student_epochs"],
        "seeds": list(SEEDS),
        "fitnet": f"published hint weight 100 with gradient clipping at norm {FITNET_CLIP}; the "
        "unclipped recipe's outcome per seed is runs[seed]['fitnet_unclipped']",
        "methods": table,
        "runs": per_seed,
        "dfpt_core": dfpt_core.__version__,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(markdown(table, params["teacher"], teacher_top1, params["student"]))
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
