"""Recipes: the scales of the project (`smoke` for CI, `cpu` for the reader's book on a laptop,
`full` for CIFAR-100 with the public KD codebases' recipe on GPU servers), and multi-run
recipes such as TAKD's chain of runs.

The paper's table as runs: one recipe per scale (`RECIPES`, `recipe`), the table of the paper's
pairs with the figures each run reproduces (`DFPT_CIFAR100`, `DKD_CIFAR100`), and the per-pair
choices as rules stated once (`pair_values`): `pair_config("cpu", "resnet56-resnet20", "kd")`
is the run that `dfpt train --scale cpu --pair resnet56-resnet20 --method kd` trains."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from pathlib import Path

from ..methods import hyperparameters
from ..methods.dkd import dkd_beta, dkd_recipe
from .config import ConfigError, TrainConfig, make_config, merge, parse_overrides

SCALES = ("smoke", "cpu", "full")


def takd_stage_configs(
    base: TrainConfig, assistant: str | Sequence[str], kd_method: str = "kd"
) -> list[TrainConfig]:
    """The TAKD recipe as run configurations, to run in order (e.g. with `run.build.run`).

    `base` describes the final run: student, teacher (+ `teacher_checkpoint`), data, schedule,
    `out_dir`, `name`; its `method_args` are passed to every stage whose method accepts them.
    `assistant` is the TA architecture, or a chain of them from large to small. For one TA:

    1. method `kd_method` ("kd"): student = the TA, teacher = the teacher; name
       `<name>-ta1-<TA>`, so the best TA lands in `<out_dir>/<name>-ta1-<TA>/checkpoints/best.pt`
       (where the trainer writes the best student as {"model": state_dict, ...});
    2. method "takd": student = `base.student`, teacher = the teacher (for the gap metrics),
       `networks={"assistants": [{"arch": TA, "checkpoint": that best.pt}]}`; name =
       `base.name`.

    A chain [TA1, TA2, ...] inserts one "takd" stage per further TA (TA_k learns from TA_{k-1}),
    and the final stage gets the whole chain. Returns the validated configs, in order.
    """
    chain = [assistant] if isinstance(assistant, str) else list(assistant)
    if not chain:
        raise ValueError("takd_stage_configs needs at least one assistant architecture")
    if base.teacher is None:
        raise ValueError("takd_stage_configs: base.teacher is None; TAKD needs the teacher")

    def args_for(method: str) -> dict:
        valid = hyperparameters(method)
        return {k: v for k, v in base.method_args.items() if k in valid}

    def networks(assistants: list[dict]) -> dict:
        return {"assistants": [dict(a) for a in assistants]} if assistants else {}

    configs, assistants = [], []
    for k, arch in enumerate(chain, start=1):
        name = f"{base.name}-ta{k}-{arch}"
        method = kd_method if k == 1 else "takd"
        configs.append(
            dataclasses.replace(
                base,
                name=name,
                method=method,
                student=arch,
                networks=networks(assistants),
                method_args=args_for(method),
            ).validate()
        )
        best = str(Path(base.out_dir) / name / "checkpoints" / "best.pt")
        assistants.append({"arch": arch, "checkpoint": best})
    configs.append(
        dataclasses.replace(
            base,
            method="takd",
            networks=networks(assistants),
            method_args=args_for("takd"),
        ).validate()
    )
    return configs


# --- The paper's table as runs: one recipe per scale, one table of pairs --------------------

#: One recipe per scale: TrainConfig values over those of the scale named by `base` (as a config
#: file's `base:`), plus the keys of `RECIPE_KEYS`. Each choice is stated once: `cpu` states only
#: what differs from `full`, and `smoke` only what differs from `cpu`.
RECIPES: dict[str, dict] = {
    # CIFAR-100 with the recipe of the public KD codebases (CRD/DKD/mdistiller; the summary of the
    # DFPT-KD paper does not give its schedule: this project's assumption) on a GPU server,
    # with the published teachers (`dfpt teachers fetch`).
    "full": {
        "dataset": "cifar100",
        "in_chans": 3,
        "epochs": 240,
        "batch_size": 64,
        "lr": 0.05,  # SMALL_LR for the students in SMALL_LR_STUDENTS
        "momentum": 0.9,
        "nesterov": False,
        "weight_decay": 5e-4,
        "schedule": "multistep",
        "milestones": [150, 180, 210],
        "gamma": 0.1,
        "warmup_epochs": 0,
        "seed": 0,
        "device": "auto",
        "fast_loader": True,
        "out_dir": "runs/full",
        "teachers": "published",
        "teacher_epochs": 240,
    },
    # The reader's book on a laptop (2 cores): real Fashion-MNIST (28x28 grey zero-padded to
    # 32x32), the book's cpu subsets and lengths. It shows the phenomena with real numbers; it
    # does not reproduce the published CIFAR-100 figures. Teachers are trained first, at this
    # scale (`--role teacher`).
    "cpu": {
        "base": "full",
        "dataset": "fashion_mnist",
        "in_chans": 1,
        "limit_train": 5000,
        # every run is scored on the full test set (10,000 images, full's limit_test None: the
        # same images for every run) at the epoch chosen on 2,000 held-out training images
        "val_size": 2000,
        "epochs": 4,
        "schedule": "cosine",  # over each run's epochs
        "milestones": [],
        "channels_last": True,  # 1.5-2.4x faster training steps on CPUs (bench/train_step.py)
        # bf16 autocast where the CPU computes bf16 natively (else fp32): 1.6-1.8x faster, its
        # accuracy within seed noise of fp32 (results/precision_study.json); `amp=none` for fp32
        "amp": "auto",
        "out_dir": "runs/cpu",
        "teachers": "trained",
        "teacher_epochs": 15,
    },
    # Seconds per run on 2 CPU cores: what CI runs. Its numbers teach nothing.
    "smoke": {
        "base": "cpu",
        "limit_train": 1000,
        "limit_test": 500,
        "val_size": 500,
        "epochs": 2,
        "device": "cpu",
        "amp": "none",  # fp32: CI's smoke numbers the same on every CPU
        "out_dir": "runs/smoke",
        "teacher_epochs": 2,
    },
}

#: The keys of a recipe that are not TrainConfig fields.
RECIPE_KEYS = {
    "base": "the scale whose recipe this one overlays",
    "teachers": "where a pair's teacher weights come from: 'published' (the released CIFAR-100 "
    "teachers, `dfpt teachers fetch`) or 'trained' (the teacher run of this scale, "
    "`dfpt train --scale <scale> --pair <pair> --role teacher`, in <out_dir>/teacher-<arch>/)",
    "teacher_epochs": "epochs of a teacher trained at this scale",
}

#: The DFPT-KD paper's 11 CIFAR-100 pairs, (teacher, student) in zoo names, in the order of its
#: same-family (six pairs) and cross-family (five pairs) tables, with the published top-1 % of
#: each column (`DFPT_COLUMNS`): the teacher, the student alone, KD, DFPT-KD, DFPT-KDt.
DFPT_CIFAR100 = {
    ("resnet32x4", "resnet8x4"): (79.42, 72.50, 73.33, 77.48, 78.63),
    ("resnet110", "resnet32"): (74.31, 71.14, 73.08, 73.92, 74.65),
    ("resnet56", "resnet20"): (72.34, 69.06, 70.66, 71.32, 72.46),
    ("wrn_40_2", "wrn_40_1"): (75.61, 71.98, 73.54, 75.47, 76.38),
    ("wrn_40_2", "wrn_16_2"): (75.61, 73.26, 74.92, 76.68, 77.23),
    ("vgg13", "vgg8"): (74.64, 70.36, 72.98, 75.23, 75.74),
    ("resnet32x4", "ShuffleV1"): (79.42, 70.50, 74.07, 77.72, 79.05),
    ("wrn_40_2", "ShuffleV1"): (75.61, 70.50, 74.83, 77.53, 78.29),
    ("vgg13", "MobileNetV2"): (74.64, 64.60, 67.37, 70.26, 70.82),
    ("ResNet50", "MobileNetV2"): (79.34, 64.60, 67.35, 70.89, 71.73),
    ("resnet32x4", "ShuffleV2"): (79.42, 71.82, 74.45, 78.74, 79.85),
}
DFPT_COLUMNS = ("teacher", "student", "kd", "dfpt_kd", "dfpt_kdt")

#: Decoupled KD as published by its code base (Zhao et al., CVPR 2022; mdistiller) on the same
#: pairs: (teacher, student): KD, DKD top-1 %.
DKD_CIFAR100 = {
    ("resnet56", "resnet20"): (70.66, 71.97),
    ("resnet110", "resnet32"): (73.08, 74.11),
    ("resnet32x4", "resnet8x4"): (73.33, 76.32),
    ("wrn_40_2", "wrn_16_2"): (74.92, 76.23),
    ("wrn_40_2", "wrn_40_1"): (73.54, 74.81),
    ("vgg13", "vgg8"): (72.98, 74.68),
    ("resnet32x4", "ShuffleV1"): (74.07, 76.45),
    ("wrn_40_2", "ShuffleV1"): (74.83, 76.70),
    ("vgg13", "MobileNetV2"): (67.37, 69.71),
    ("ResNet50", "MobileNetV2"): (67.35, 70.35),
    ("resnet32x4", "ShuffleV2"): (74.45, 77.07),
}

#: The pairs by name, `<teacher>-<student>`, as `--pair` takes them.
PAIRS = {f"{t}-{s}": (t, s) for t, s in DFPT_CIFAR100}

#: The methods of the paper's table, one run each per pair and scale (`--method`).
PAIR_METHODS = ("kd", "dkd", "dfpt_kd", "dfpt_kdt")

#: The roles of a run of a pair: distil the student (with one of PAIR_METHODS), or train the
#: teacher with cross-entropy (at a scale whose teachers are "trained").
ROLES = ("student", "teacher")

#: The per-student-family learning rate (the CRD/DKD convention, which the paper follows):
#: ShuffleNet and MobileNet students train at SMALL_LR instead of the recipe's lr.
SMALL_LR_STUDENTS = ("ShuffleV1", "ShuffleV2", "MobileNetV2")
SMALL_LR = 0.01

_TITLES = {"kd": "KD (T=4)", "dfpt_kd": "DFPT-KD", "dfpt_kdt": "DFPT-KDt"}
_COLUMN = {"kd": "KD", "dfpt_kd": "DFPT-KD", "dfpt_kdt": "DFPT-KDt"}
_PAPER = "DFPT-KD paper arXiv 2506.18244, CIFAR-100 per-pair tables"


def _choose(key: str, value, allowed) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}: unknown {value!r}; allowed: {', '.join(allowed)}")


def _choose_method(method: str | None) -> None:
    if method not in PAIR_METHODS:
        given = "none given" if method is None else f"unknown {method!r}"
        raise ConfigError(
            f"method: {given}; allowed: {', '.join(PAIR_METHODS)} (and --role teacher trains "
            "the pair's teacher with ce)"
        )


def recipe(scale: str) -> dict:
    """The recipe of `scale` with its bases applied: the TrainConfig values it sets, plus
    `teachers` and `teacher_epochs` (`RECIPE_KEYS`). A fresh copy: change it freely."""
    _choose("scale", scale, SCALES)
    own = copy.deepcopy(RECIPES[scale])
    base = own.pop("base", None)
    return merge(recipe(base), own) if base else own


def recipe_train_values(scale: str) -> dict:
    """The TrainConfig values of `scale`'s recipe (its `RECIPE_KEYS` left out)."""
    return {k: v for k, v in recipe(scale).items() if k not in RECIPE_KEYS}


def teacher_run_name(teacher: str) -> str:
    """The run (and folder) name of a teacher trained at a scale: `teacher-<arch>`."""
    return f"teacher-{teacher}"


def pair_values(
    scale: str,
    pair: str,
    method: str | None = None,
    role: str = "student",
    overrides: Sequence[str] = (),
) -> dict:
    """The values (the recipe's and the run's own, not TrainConfig's defaults) of one run of
    the paper's table: `scale`'s recipe, then the pair's choices, then `key=value` overrides.

    The pair's choices, each a rule stated once:
    - name `<teacher>-<student>-<method>`; the teacher's weights by the recipe's `teachers`:
      "published", or the best checkpoint of the scale's teacher run,
      `<out_dir>/teacher-<teacher>/checkpoints/best.pt`;
    - lr SMALL_LR for the students in SMALL_LR_STUDENTS (else the recipe's);
    - DKD: mdistiller's per-pair beta (`dkd_beta`: 2.0, 6.0 or 8.0), and its 20-of-240-epoch
      warm-up scaled to the run's epochs (`dkd_recipe`; 1 epoch at the cpu and smoke scales).
    `role="teacher"` is the teacher's own run instead: cross-entropy, `teacher_epochs` epochs,
    name `teacher-<teacher>`. Choices derived from a value (the teacher checkpoint from
    `out_dir`, DKD's warm-up from `epochs`) follow an override of that value; an override of
    the choice itself wins.
    """
    rec = recipe(scale)
    _choose("pair", pair, PAIRS)
    _choose("role", role, ROLES)
    teacher, student = PAIRS[pair]
    over = parse_overrides(list(overrides))
    values = recipe_train_values(scale)
    settled = merge(values, over)  # what the choices derive from, after the overrides
    if role == "teacher":
        if method not in (None, "ce"):
            raise ConfigError(
                f"method: a teacher run (--role teacher) trains with 'ce', not {method!r}"
            )
        run = {
            "name": teacher_run_name(teacher),
            "method": "ce",
            "student": teacher,
            "epochs": rec["teacher_epochs"],
        }
        return merge(merge(values, run), over)
    _choose_method(method)
    if rec["teachers"] == "published":
        checkpoint = "published"
    else:
        run_dir = Path(settled["out_dir"]) / teacher_run_name(teacher)
        checkpoint = (run_dir / "checkpoints" / "best.pt").as_posix()
    run = {
        "name": f"{pair}-{method}",
        "method": method,
        "teacher": teacher,
        "student": student,
        "teacher_checkpoint": checkpoint,
    }
    if student in SMALL_LR_STUDENTS:
        run["lr"] = SMALL_LR
    if method == "dkd":
        scaled = dkd_recipe(teacher, student, settled["epochs"])
        run["method_args"] = {"beta": dkd_beta(teacher, student), **scaled}
    return merge(merge(values, run), over)


def pair_config(
    scale: str,
    pair: str,
    method: str | None = None,
    role: str = "student",
    overrides: Sequence[str] = (),
) -> TrainConfig:
    """`pair_values` as a validated TrainConfig."""
    return make_config(pair_values(scale, pair, method, role, overrides))


def pair_notes(scale: str, pair: str, method: str | None = None, role: str = "student") -> list:
    """What a run of the table is for, in lines: the published figure it reproduces (at full
    scale) or mirrors (at the others), and where its teacher comes from."""
    rec = recipe(scale)
    _choose("pair", pair, PAIRS)
    teacher, student = PAIRS[pair]
    top1 = dict(zip(DFPT_COLUMNS, DFPT_CIFAR100[(teacher, student)], strict=True))
    if role == "teacher":
        lines = [
            f"Trains the {teacher} teacher of the {scale}-scale {teacher}-* pairs with "
            f"cross-entropy; its best checkpoint is their teacher_checkpoint."
        ]
        if rec["teachers"] == "published":
            lines.append(
                f"The {scale}-scale pairs use the published {teacher} instead (CIFAR-100 "
                f"top-1 {top1['teacher']:.2f})."
            )
        return lines
    _choose_method(method)
    if method == "dkd":
        kd, dkd = DKD_CIFAR100[(teacher, student)]
        figure = (
            f"Decoupled KD on {teacher} -> {student}, CIFAR-100; published top-1 {dkd:.2f} "
            f"(Zhao et al., CVPR 2022, mdistiller; KD {kd:.2f}). beta = dkd_beta({teacher}, "
            f"{student})."
        )
    else:
        context = (
            f"teacher {top1['teacher']:.2f}, student alone {top1['student']:.2f}"
            if method == "kd"
            else f"KD {top1['kd']:.2f}, teacher {top1['teacher']:.2f}"
        )
        figure = (
            f"{_TITLES[method]} on {teacher} -> {student}, CIFAR-100; published top-1 "
            f"{top1[method]:.2f} ({_PAPER}, {_COLUMN[method]} column; {context})."
        )
    if rec["teachers"] == "published":
        return [f"Reproduces: {figure}"]
    return [
        f"{scale}-scale counterpart ({rec['dataset']}, {rec['epochs']} epochs) of the full run "
        f"that reproduces: {figure}",
        f"Needs the teacher first: dfpt train --scale {scale} --pair {pair} --role teacher",
    ]


def pair_table(scale: str = "full") -> list[dict]:
    """Every pair of the table with its choices at `scale` and its published top-1 %."""
    rows = []
    for pair, (teacher, student) in PAIRS.items():
        dkd = pair_values(scale, pair, "dkd")
        top1 = dict(zip(DFPT_COLUMNS, DFPT_CIFAR100[(teacher, student)], strict=True))
        rows.append(
            {
                "pair": pair,
                "lr": dkd["lr"],
                "dkd_beta": dkd["method_args"]["beta"],
                "teacher_checkpoint": dkd["teacher_checkpoint"],
                **{f"top1_{c}": top1[c] for c in ("teacher", "student", "kd")},
                "top1_dkd": DKD_CIFAR100[(teacher, student)][1],
                **{f"top1_{c}": top1[c] for c in ("dfpt_kd", "dfpt_kdt")},
            }
        )
    return rows
