"""The book's runs keep their cache names: the training settings a notebook passes
(`nb.common_args` with the preset's values), and the `config_key` of its teacher,
student-alone, distillation and stem runs, equal the names pinned below. A changed hash would
make the book retrain everything and miss the shipped cpu runs (data/runs/cpu/<name>-<hash>/):
change a recipe on purpose, then regenerate the shipped runs and pin the new names here."""

from __future__ import annotations

from pathlib import Path

import pytest

import dfpt_core.run.build
import dfpt_core.workbook as nb
from dfpt_core.methods.dkd import dkd_recipe
from dfpt_core.run.recipes import SCALES
from dfpt_core.workbook.book import load_params

# The settings every notebook run at a scale shares, as `nb.common_args` returned them before
# (`progress` aside, which is not hashed): keys, values and types.
COMMON = {
    "smoke": {
        "dataset": "fashion_mnist",
        "in_chans": 1,
        "limit_train": 1000,
        "limit_test": 500,
        "batch_size": 64,
        "lr": 0.05,
        "device": "cpu",
        "seed": 0,
        "amp": "none",
        "val_size": 500,
        "schedule": "cosine",
        "milestones": [],
        "channels_last": True,
    },
    "cpu": {
        "dataset": "fashion_mnist",
        "in_chans": 1,
        "limit_train": 5000,
        "limit_test": None,
        "batch_size": 64,
        "lr": 0.05,
        "device": "auto",
        "seed": 0,
        "amp": "auto",
        "val_size": 2000,
        "schedule": "cosine",
        "milestones": [],
        "channels_last": True,
    },
    "full": {
        "dataset": "cifar100",
        "in_chans": 3,
        "limit_train": None,
        "limit_test": None,
        "batch_size": 64,
        "lr": 0.05,
        "device": "auto",
        "seed": 0,
        "amp": "none",
        "val_size": 0,
        "schedule": "cosine",
        "milestones": [],
        "channels_last": True,
    },
}

# `<run name>-<config_key>` of notebook-style runs: full's as computed before the presets read
# the recipes (commit 6630784); smoke's and cpu's since their recipes added a validation split
# (both) and bf16 where native with the full test set (cpu), which changed them on purpose; the
# stem runs since 03 trains a width-0.25 tv_resnet18 over seeds (smoke and cpu).
RUN_NAMES = {
    "smoke": {
        "teacher resnet20": "resnet20-ce-d54c5e31dc",
        "teacher resnet8": "resnet8-ce-ca7990f86e",
        "alone": "resnet8-ce-0d5b215347",
        "kd": "resnet8-from-resnet20-kd-ed48259913",
        "dkd": "resnet8-from-resnet20-dkd-e6a5db24a4",
        "dfpt_kdt": "resnet8-from-resnet20-dfpt_kdt-71b51b3862",
        "stem": "tv_resnet18-w0.25-cifar-stem-924129eb5e",
    },
    "cpu": {  # the teachers shipped in data/runs/cpu/
        "teacher resnet20": "resnet20-ce-d1853437b7",
        "teacher resnet8": "resnet8-ce-e351351eef",
        "teacher resnet14": "resnet14-ce-cd9221cb3f",
        "teacher resnet32": "resnet32-ce-c092845375",
        "teacher resnet56": "resnet56-ce-d488cefefa",
        "alone": "resnet8-ce-c7033ddb47",
        "kd": "resnet8-from-resnet20-kd-df69b534cf",
        "dkd": "resnet8-from-resnet20-dkd-ef127b189b",
        "dfpt_kdt": "resnet8-from-resnet20-dfpt_kdt-1a3d1084f8",
        "stem": "tv_resnet18-w0.25-cifar-stem-c2e004e567",
    },
    "full": {
        "teacher resnet32x4": "resnet32x4-ce-ca56dfa92c",
        "teacher resnet56": "resnet56-ce-955a98e7aa",
        "teacher resnet110": "resnet110-ce-94a7de87ea",
        "alone": "resnet8x4-ce-62d112fbe1",
        "kd": "resnet8x4-from-resnet32x4-kd-73473561f1",
        "dkd": "resnet8x4-from-resnet32x4-dkd-5cd208dbbd",
        "dfpt_kdt": "resnet8x4-from-resnet32x4-dfpt_kdt-ef2537a238",
        "stem": "tv_resnet18-cifar-stem-34e2f25399",
    },
}


class Trained(Exception):
    """Raised instead of training: carries the run name the cache computed."""


@pytest.fixture
def run_name(monkeypatch):
    """`run_name(lambda: nb.<call>)`: the cache name of the run the call would train or load."""

    def refuse(cfg, **kwargs):
        raise Trained(cfg.name)

    monkeypatch.setattr(dfpt_core.run.build, "run", refuse)

    def name(call) -> str:
        try:
            result = call()
        except Trained as e:
            return str(e)
        return result.run.run_dir.name if isinstance(result, nb.Teacher) else result.run_dir.name

    return name


def notebook_common(p: dict, **extra) -> dict:
    """`common` as the notebooks build it from their parameters."""
    return nb.common_args(
        p["dataset"],
        p["in_chans"],
        p["limit_train"],
        p["limit_test"],
        p["batch_size"],
        p["lr"],
        p["device"],
        p["seed"],
        False,
        amp=p["amp"],
        val_size=p["val_size"],
        **extra,
    )


@pytest.mark.parametrize("scale", SCALES)
def test_common_args_are_unchanged(scale):
    p = load_params(scale)
    for common in (notebook_common(p), nb.preset_common(p)):
        shared = {k: v for k, v in common.items() if k != "progress"}
        assert shared == COMMON[scale]
        assert {k: type(v) for k, v in shared.items()} == {
            k: type(v) for k, v in COMMON[scale].items()
        }


@pytest.mark.parametrize("scale", SCALES)
def test_notebook_runs_keep_their_cache_names(scale, run_name, tmp_path):
    p = load_params(scale)
    common = notebook_common(p)
    expected = RUN_NAMES[scale]
    for arch in dict.fromkeys([p["teacher"], *p["gap_teachers"]]):
        got = run_name(lambda arch=arch: nb.teacher(arch, tmp_path, common, p["teacher_epochs"]))
        assert got == expected[f"teacher {arch}"], arch
    student, epochs = p["student"], p["student_epochs"]
    alone = run_name(
        lambda: nb.cached_run(
            f"{student}-ce", tmp_path, method="ce", student=student, epochs=epochs, **common
        )
    )
    assert alone == expected["alone"]
    # distillation from the teacher run the cache names (its checkpoint counts by folder name)
    folder = expected[f"teacher {p['teacher']}"]
    teacher = nb.Teacher(p["teacher"], Path(tmp_path) / folder / "checkpoints" / "best.pt")
    for method, args in (
        ("kd", {}),
        ("dkd", dkd_recipe(p["teacher"], student, epochs)),  # as 08_baselines calls it
        ("dfpt_kdt", {}),
    ):
        got = run_name(
            lambda method=method, args=args: nb.distil(
                method, teacher, student, tmp_path, common, epochs, **args
            )
        )
        assert got == expected[method], method
    # 03_stem_fix: its own data sizes, batch and lr, and Nesterov momentum
    stem_common = nb.common_args(
        p["stem_dataset"] or p["dataset"],
        p["in_chans"],
        p["stem_limit_train"],
        p["stem_limit_test"],
        p["stem_batch_size"] or p["batch_size"],
        p["stem_lr"] or p["lr"],
        p["device"],
        p["seed"],
        False,
        amp=p["amp"],
        val_size=p["val_size"],
        nesterov=True,
    )
    width = p["stem_width"]
    stem = run_name(
        lambda: nb.cached_run(
            "tv_resnet18" + ("" if width == 1 else f"-w{width:g}") + "-cifar-stem",
            tmp_path,
            method="ce",
            student="tv_resnet18",
            student_args={"stem": "cifar", **({"width": width} if width != 1 else {})},
            epochs=p["stem_epochs"],
            **stem_common,
        )
    )
    assert stem == expected["stem"]
