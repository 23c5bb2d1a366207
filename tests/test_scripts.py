"""The regeneration scripts' own logic: `ship_cpu_runs.py --reuse-shipped` seeds the retrain
cache with the shipped runs (checksums verified, idempotent), and `cpu_study.py` states every
method as paired differences over seeds."""

from __future__ import annotations

import importlib.util
import sys

import pytest

from dfpt_core.workbook.cache import shipped_manifest
from dfpt_core.workbook.checkout import REPO_ROOT, SHIPPED_DIR
from dfpt_core.workbook.stats import paired_difference


def script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def test_reuse_shipped_copies_every_shipped_run_once(tmp_path):
    ship = script("ship_cpu_runs")
    runs = shipped_manifest(SHIPPED_DIR)["runs"]
    assert ship.reuse_shipped(SHIPPED_DIR, tmp_path) == len(runs)
    for name, entry in runs.items():
        assert {
            p.relative_to(tmp_path / name).as_posix()
            for p in (tmp_path / name).rglob("*")
            if p.is_file()
        } >= set(entry["files"])
    assert ship.reuse_shipped(SHIPPED_DIR, tmp_path) == 0  # already there: nothing copied


def test_cpu_study_states_paired_differences_to_alone_and_to_kd():
    study = script("cpu_study")
    seeds = range(5)
    top1 = {m: [70.0 + i + (s % 3) for s in seeds] for i, m in enumerate(study.METHODS)}
    top1["dkd"] = [k - 1.0 - 0.1 * s for s, k in zip(seeds, top1["kd"], strict=True)]
    per_seed = {
        s: {m: {"student_top1": top1[m][s], "seconds": 1.0} for m in study.METHODS} for s in seeds
    }
    table = study.summarise(per_seed, teacher_top1=90.0)
    assert list(table) == list(study.METHODS)
    for m in study.METHODS:
        assert table[m]["gain"] == paired_difference(top1[m], top1["ce"])
        assert table[m]["vs_kd"] == paired_difference(top1[m], top1["kd"])
        assert table[m]["gap"]["values"] == pytest.approx([90.0 - t for t in top1[m]])
    assert table["dkd"]["vs_kd"]["shown"] and table["dkd"]["vs_kd"]["mean"] < 0
    assert "| dkd |" in study.markdown(table, "resnet20", 90.0, "resnet8")
