"""The `cpu`-scale study: every method on the book's cpu pair, five seeds, one results table.

The pair, data and schedule are the book's `cpu` scale (`load_params("cpu")`): the shipped
teacher (data/runs/cpu/, see scripts/ship_cpu_runs.py) distilled into the student on
real Fashion-MNIST, each run scored on the full test set (10,000 images) at the epoch chosen on
the validation split. Every method runs with seeds 0 to 4 (data order, augmentation, subset,
initialisation); the teacher is the same for all. Runs share the book's run cache
(runs/book-<scale>/cache/, then the shipped runs): the runs of notebook 08 are loaded, not
retrained, and an interrupted study resumes where it stopped. `--jobs N` trains N seeds at once
in worker processes (each with its share of the cores, or spread over `--devices`), and a call
over all seeds collects them, with each method's paired difference to the student alone and to
KD (mean and 95 % confidence interval over the seeds):

    python scripts/cpu_study.py --jobs 2   # writes results/cpu_study.json and the table
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
from dfpt_core.workbook.stats import paired_difference
from dfpt_core.workbook.study import study_setup

SEEDS = (0, 1, 2, 3, 4)
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


def context(scale: str, cache: str | None = None) -> tuple[dict, nb.Teacher, Path]:
    """The preset, teacher and run cache (runs/`cache`/, by default the book's) of the study."""
    return study_setup(scale, cache or f"book-{scale}/cache")


def train_one_seed(scale: str, seed: int, cache: str | None) -> dict[str, dict]:
    """`train_seed` in this process or a --jobs worker."""
    params, teacher, cache_dir = context(scale, cache)
    return train_seed(params, seed, teacher, cache_dir)


def study_common(params: dict) -> dict:
    """The book's cpu settings, scored on the full test set."""
    return {**nb.preset_common(params), "limit_test": None}


def summarise(per_seed: dict[int, dict], teacher_top1: float) -> dict:
    """Per method, over the seeds: the selected epoch's test top-1 (mean, sample std, values),
    the teacher-student gap, and the paired differences to the student trained alone ("gain")
    and to KD ("vs_kd"), each {"mean", "ci95", "n", "diffs", "shown"}."""

    def stats(values):
        return {"mean": statistics.mean(values), "std": statistics.stdev(values), "values": values}

    def top1(method):
        return [per_seed[s][method]["student_top1"] for s in sorted(per_seed)]

    return {
        method: {
            "top1": stats(top1(method)),
            "gap": stats([teacher_top1 - t for t in top1(method)]),
            "gain": paired_difference(top1(method), top1("ce")),
            "vs_kd": paired_difference(top1(method), top1("kd")),
            "seconds": statistics.mean(per_seed[s][method]["seconds"] for s in per_seed),
        }
        for method in METHODS
    }


def markdown(table: dict, teacher: str, teacher_top1: float, student: str) -> str:
    n = len(table["ce"]["top1"]["values"])
    lines = [
        f"| method | top-1 % (mean ± std, {n} seeds) | gap to teacher ({teacher}, "
        f"{teacher_top1:.2f} %) | gain over {student} alone (95 % CI) | vs KD (95 % CI) | s/run |",
        "|---|---|---|---|---|---|",
    ]

    def paired(d):
        low, high = d["ci95"]
        return f"{d['mean']:+.2f} ({low:+.2f} to {high:+.2f})"

    for method, row in table.items():
        top1, gap = row["top1"], row["gap"]
        label = f"{method} (clip {FITNET_CLIP:g})" if method == "fitnet" else method
        gain = "-" if method == "ce" else paired(row["gain"])
        vs_kd = "-" if method == "kd" else paired(row["vs_kd"])
        lines.append(
            f"| {label} | {top1['mean']:.2f} ± {top1['std']:.2f} | {gap['mean']:.2f} | {gain} | "
            f"{vs_kd} | {row['seconds']:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    parser.add_argument("--scale", default="cpu", choices=nb.SCALES, help="the book's preset")
    parser.add_argument("--jobs", type=int, default=1, help="seeds at once (worker processes)")
    parser.add_argument("--devices", nargs="+", help="CUDA devices the workers share out")
    parser.add_argument("--out", default=REPO_ROOT / "results" / "cpu_study.json", type=Path)
    parser.add_argument(
        "--cache",
        help="the run cache under runs/ (default book-<scale>/cache, the book's; "
        "book-cpu/cache-retrain reads the runs scripts/ship_cpu_runs.py is about to ship)",
    )
    args = parser.parse_args()
    params, teacher, _ = context(args.scale, args.cache)
    if teacher.run is None or teacher.run.run_dir.name not in shipped_manifest().get("runs", {}):
        print(f"note: teacher {params['teacher']} is not a shipped one: {teacher.checkpoint}")
    tasks = [(args.scale, seed, args.cache) for seed in args.seeds]
    if args.jobs > 1 or args.devices:
        finished = run_parallel(train_one_seed, tasks, args.jobs, args.devices)
    else:
        finished = ((task, train_one_seed(*task)) for task in tasks)
    per_seed = {}
    for (_, seed, _), records in finished:
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
        "about": "cpu-scale study (scripts/cpu_study.py): test top-1 on the full Fashion-MNIST "
        "test set at the epoch chosen on the validation split, mean and sample std over seeds, "
        "paired differences to the student alone and to KD with 95 % confidence intervals",
        "selection": f"validation split of {params['val_size']} training images",
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
