"""The DFPT-KD study at `cpu` scale (issue: the easy-to-hard prompt path, fairly compared).

The book's cpu pair (the shipped resnet20 teacher, a resnet8 student, real Fashion-MNIST, the
cpu recipe's 5,000 training images and 4 epochs), every run scored on the full test set (10,000
images, the same for every run) at the epoch selected on a validation split (VAL_SIZE training
images held out of every run's training subset, the same for every run; never the test set);
the last epoch's scores are reported beside them. Each DFPT run
carries a PathProbe: the prompt path's top-1, true-class confidence, agreement with and KL to
student and teacher on 256 fixed training images every PROBE_EVERY steps (the paper's Fig. 3
shows the prompt path's training accuracy).

Headline runs (SEEDS, paired by seed): KD, KD with DFPT's total distillation weight (1.8), KD
for twice the epochs (within DFPT-KD's wall-clock budget), DFPT-KD with each fusion variant
(residual = the identity start, grouped, concat = the literal reading), DFPT-KD with the student
learning from the original path only or the prompt path only, DFPT-KDt. Secondary runs
(SECONDARY_SEEDS): the prompt path's supervision (teacher only, student only) for the literal
variant (the default) and the identity start (residual), the KDt copy's BatchNorm in eval mode,
the student alone (CE). Run it on one thread per process (the numbers depend on the thread
count): `--jobs N` runs N runs at once in worker processes, each with its share of the cores
(`--devices 0 1 ...` spreads them over GPUs instead); runs are cached, so a second call only
collects.

    python scripts/dfpt_study.py --jobs 2      # on 2 cores: one thread per worker
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch

import dfpt_core.workbook as nb
from dfpt_core.data import fixed_batch
from dfpt_core.engine.probe import PROBE_FILE, PathProbe
from dfpt_core.engine.trainer import NonFiniteLossError
from dfpt_core.workbook.checkout import REPO_ROOT
from dfpt_core.workbook.parallel import run_parallel
from dfpt_core.workbook.stats import describe, paired_difference
from dfpt_core.workbook.study import study_setup, write_study

SEEDS = (0, 1, 2, 3, 4)
SECONDARY_SEEDS = (0, 1)
VAL_SIZE = 2000  # validation images held out of the training split (data.split_indices)
PROBE_EVERY, PROBE_IMAGES = 10, 256
IDENTITY = {"fusion": "residual"}  # the identity start (its own init: zero)

#: name -> (method, method_args, epochs factor); headline runs first. DFPT-KD's default fusion is
#: the literal reading (concat, standard init): "dfpt_literal" is DFPT-KD as it ships.
HEADLINE = {
    "kd": ("kd", {}, 1),
    "kd_matched": ("kd", {"kd_weight": 1.8}, 1),
    "kd_2x_epochs": ("kd", {}, 2),
    "dfpt_literal": ("dfpt_kd", {}, 1),
    "dfpt_residual": ("dfpt_kd", IDENTITY, 1),
    "dfpt_grouped": ("dfpt_kd", {"fusion": "grouped"}, 1),
    "dfpt_original_only": ("dfpt_kd", {"prompt_kd_weight": 0.0}, 1),
    "dfpt_prompt_only": ("dfpt_kd", {"kd_weight": 0.0}, 1),
    "dfpt_kdt": ("dfpt_kdt", {}, 1),
}
SECONDARY = {
    "ce": ("ce", {}, 1),
    "dfpt_literal_teacher_only": ("dfpt_kd", {"supervision": "teacher"}, 1),
    "dfpt_literal_student_only": ("dfpt_kd", {"supervision": "student"}, 1),
    "dfpt_residual_teacher_only": ("dfpt_kd", {**IDENTITY, "supervision": "teacher"}, 1),
    "dfpt_residual_student_only": ("dfpt_kd", {**IDENTITY, "supervision": "student"}, 1),
    "dfpt_kdt_bn_eval": ("dfpt_kdt", {"backbone_bn": "eval"}, 1),
}
#: the paired differences the study reports: (a, b) means a - b
COMPARISONS = (
    ("dfpt_literal", "kd_matched"),
    ("dfpt_literal", "kd"),
    ("kd_matched", "kd"),
    ("dfpt_kdt", "dfpt_literal"),
    ("dfpt_residual", "dfpt_literal"),
    ("dfpt_grouped", "dfpt_literal"),
    ("dfpt_residual", "kd_matched"),
    ("kd_2x_epochs", "kd"),
    ("dfpt_literal", "kd_2x_epochs"),
    ("dfpt_original_only", "dfpt_literal"),
    ("dfpt_prompt_only", "dfpt_literal"),
    ("dfpt_kdt_bn_eval", "dfpt_kdt"),
    ("kd", "ce"),
)


def probe_images(params: dict, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first PROBE_IMAGES images of the run's training subset, as training normalises them."""
    return fixed_batch(
        params["dataset"], PROBE_IMAGES, in_chans=params["in_chans"],
        limit=params["limit_train"], seed=seed, val_size=VAL_SIZE,
    )  # fmt: skip


def train(name: str, spec, params: dict, seed: int, teacher, cache: Path) -> dict:
    method, args, factor = spec
    common = {**nb.preset_common(params), "limit_test": None, "seed": seed, "val_size": VAL_SIZE}
    epochs = params["student_epochs"] * factor
    try:
        if method == "ce":
            run = nb.cached_run(
                f"{params['student']}-ce",
                cache,
                method="ce",
                student=params["student"],
                epochs=epochs,
                **common,
            )
        else:
            callbacks = (
                [PathProbe(*probe_images(params, seed), PROBE_EVERY)]
                if method.startswith("dfpt")
                else []
            )
            run = nb.distil(
                method,
                teacher,
                params["student"],
                cache,
                common,
                epochs,
                tag=name,
                callbacks=callbacks,
                **args,
            )
    except NonFiniteLossError as e:  # a result too: recorded, never retried with other settings
        return {"diverged": str(e).split("; ")[0]}
    probe = run.run_dir / PROBE_FILE
    record = json.loads((run.run_dir / "metrics.json").read_text())
    return {
        "selected": run.best,
        "last": run.final,
        "history": run.history,
        "probe": json.loads(probe.read_text()) if probe.is_file() else None,
        "run": run.run_dir.name,
        "seconds": record["seconds"],
    }


def summary(runs: dict, epoch: str = "selected") -> dict:
    """Per-run means over seeds and the paired differences of COMPARISONS, scored at each run's
    `epoch`: "selected" (on the validation split) or "last"."""
    out = {"runs": {}, "diverged": {}, "comparisons": {}}
    for name, per_seed in runs.items():
        failed = {s: r["diverged"] for s, r in per_seed.items() if "diverged" in r}
        if failed:
            out["diverged"][name] = failed
            continue
        top1 = [per_seed[s][epoch]["student_top1"] for s in sorted(per_seed)]
        out["runs"][name] = {
            "seeds": sorted(per_seed),
            "student_top1": {
                "mean": statistics.fmean(top1),
                "std": statistics.stdev(top1),
                "values": top1,
            },
            "selected_epochs": [per_seed[s]["selected"]["epoch"] for s in sorted(per_seed)],
            "seconds": statistics.fmean(per_seed[s]["seconds"] for s in per_seed),
        }
        if "prompt_top1" in per_seed[min(per_seed)][epoch]:
            for key in (
                "prompt_top1",
                "agree_student_prompt",
                "agree_teacher_prompt",
                "kl_teacher_prompt",
                "kl_student_prompt",
            ):
                out["runs"][name][key] = statistics.fmean(per_seed[s][epoch][key] for s in per_seed)
    for a, b in COMPARISONS:
        if a in out["diverged"] or b in out["diverged"]:
            continue
        seeds = sorted(set(runs[a]) & set(runs[b]))
        d = paired_difference(
            [runs[a][s][epoch]["student_top1"] for s in seeds],
            [runs[b][s][epoch]["student_top1"] for s in seeds],
        )
        out["comparisons"][f"{a} - {b}"] = {**d, "seeds": seeds, "text": describe(d)}
    return out


def context() -> tuple[dict, nb.Teacher, Path]:
    return study_setup("cpu", "dfpt-study")


def train_one(name: str, seed: int) -> dict:
    """One run of the study, in this process or a --jobs worker: its record."""
    params, teacher, cache = context()
    return train(name, {**HEADLINE, **SECONDARY}[name], params, seed, teacher, cache)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    parser.add_argument("--jobs", type=int, default=1, help="runs at once (worker processes)")
    parser.add_argument("--devices", nargs="+", help="CUDA devices the workers share out")
    parser.add_argument("--out", default=REPO_ROOT / "results" / "dfpt_study.json", type=Path)
    args = parser.parse_args()
    params, teacher, _ = context()
    tasks = [
        (name, seed)
        for seed in args.seeds
        for name in {**HEADLINE, **(SECONDARY if seed in SECONDARY_SEEDS else {})}
    ]
    if args.jobs > 1 or args.devices:
        finished = run_parallel(train_one, tasks, args.jobs, args.devices)
    else:
        finished = ((task, train_one(*task)) for task in tasks)
    runs: dict[str, dict] = {}
    for (name, seed), done in finished:
        if isinstance(done, Exception):
            raise done
        runs.setdefault(name, {})[seed] = done
        top1 = done.get("diverged") or f"{done['selected']['student_top1']:.2f}"
        print(f"seed {seed} {name}: {top1}", flush=True)
    order = {**HEADLINE, **SECONDARY}
    runs = {name: dict(sorted(runs[name].items())) for name in order if name in runs}
    if sorted(args.seeds) != list(SEEDS):
        return  # a partial call trains; the call over all seeds reports
    result = summary(runs)
    record = {
        "about": "DFPT-KD study at cpu scale (scripts/dfpt_study.py): top-1 on the full "
        "Fashion-MNIST test set at the epoch selected on the validation split; paired "
        "differences over seeds with 95 % t intervals; last_epoch: the same at the last epoch",
        "teacher": params["teacher"],
        "teacher_checkpoint": str(Path(teacher.checkpoint).relative_to(REPO_ROOT)),
        "student": params["student"],
        "limit_train": params["limit_train"],
        "epochs": params["student_epochs"],
        "val_size": VAL_SIZE,
        "probe": {"every_steps": PROBE_EVERY, "images": PROBE_IMAGES, "split": "train"},
        **result,
        "last_epoch": summary(runs, "last"),
        "per_seed": runs,
    }
    write_study(args.out, record)
    for name, row in result["runs"].items():
        top1, n = row["student_top1"], len(row["seeds"])
        print(
            f"{name:28s} {top1['mean']:6.2f} ± {top1['std']:.2f}  "
            f"({n} seeds, {row['seconds']:.0f} s/run)"
        )
    for name, failed in result["diverged"].items():
        print(f"{name:28s} diverged: {failed}")
    for name, c in result["comparisons"].items():
        print(f"{name:40s} {c['text']}")
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
