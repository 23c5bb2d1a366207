"""A run folder has one owner: a second process is refused while a run trains there, a finished
or partial run is never silently overwritten, `--resume` only continues the configuration that
produced the run, a batch larger than the training set is an error, not an empty run, and the run
cache waits for a run another process trains, then loads it (parallel notebooks and jobs)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import tiny_config, tiny_yaml

from dfpt_core.cli import main
from dfpt_core.engine.records import RunFolderError, make_run_dir, run_lock
from dfpt_core.models import read_checkpoint
from dfpt_core.run.build import run
from dfpt_core.workbook import cached_run

REPO = Path(__file__).resolve().parents[1]


def test_a_finished_run_is_not_overwritten_without_overwrite(tmp_path, fmnist_root):
    cfg = tiny_config(tmp_path, fmnist_root, epochs=1)
    first = run(cfg)
    best = read_checkpoint(first.run_dir / "checkpoints" / "best.pt")["model"]
    with pytest.raises(RunFolderError, match=r"already holds a finished run \(1 of 1 epochs\)"):
        run(tiny_config(tmp_path, fmnist_root, epochs=1, seed=5))
    kept = read_checkpoint(first.run_dir / "checkpoints" / "best.pt")["model"]
    assert all(torch.equal(kept[k], v) for k, v in best.items())
    again = run(tiny_config(tmp_path, fmnist_root, epochs=1, seed=5), overwrite=True)
    assert json.loads((again.run_dir / "metrics.json").read_text())["seed"] == 5
    assert not torch.equal(
        read_checkpoint(again.run_dir / "checkpoints" / "best.pt")["model"]["fc.weight"],
        best["fc.weight"],
    )


def test_a_second_process_is_refused_while_a_run_owns_the_folder(tmp_path, fmnist_root):
    cfg = tiny_config(tmp_path, fmnist_root, epochs=1)
    (tmp_path / "run").mkdir()
    # held through another open file description: to flock, that is another process
    owner = run_lock(tmp_path / "run")
    with owner, pytest.raises(RunFolderError, match="in use by another process"):
        run(cfg)
    assert not (tmp_path / "run" / "metrics.json").exists()
    run(cfg)  # free again once the owner let go


def test_resume_refuses_another_configuration_naming_the_keys(tmp_path, fmnist_root):
    run(tiny_config(tmp_path, fmnist_root, epochs=1))
    stored = (tmp_path / "run" / "config.yaml").read_text()
    with pytest.raises(RunFolderError, match=r"lr: 0\.05 -> 0\.1; seed: 0 -> 2"):
        run(tiny_config(tmp_path, fmnist_root, epochs=2, lr=0.1, seed=2), resume=True)
    assert (tmp_path / "run" / "config.yaml").read_text() == stored  # history's config kept
    resumed = run(tiny_config(tmp_path, fmnist_root, epochs=2), resume=True)  # more epochs: fine
    assert [h["epoch"] for h in resumed.history] == [1, 2]


def test_the_command_line_says_resume_or_overwrite(tmp_path, fmnist_root, capsys):
    config = tiny_yaml(
        tmp_path / "run.yaml",
        tmp_path / "runs",
        fmnist_root,
        epochs=1,
        limit_train=64,
        limit_test=32,
    )
    assert main(["train", "--config", str(config)]) == 0
    assert main(["train", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "already holds a finished run" in err and "--resume" in err and "--overwrite" in err
    assert main(["train", "--config", str(config), "--overwrite"]) == 0


def test_a_batch_larger_than_the_training_set_is_an_error(tmp_path, fmnist_root):
    cfg = tiny_config(tmp_path, fmnist_root, limit_train=20, batch_size=32)
    with pytest.raises(ValueError, match="batch_size 32 is larger than the 20 fashion_mnist"):
        run(cfg)
    assert not (tmp_path / "run").exists()


def test_the_run_cache_waits_for_a_run_another_process_trains_and_loads_it(tmp_path, fmnist_root):
    values = {
        k: v
        for k, v in tiny_config(tmp_path, fmnist_root, epochs=1).to_dict().items()
        if k not in ("name", "out_dir")
    }
    produced = cached_run("tiny", tmp_path / "elsewhere", **values)  # what the owner will leave
    run_dir = tmp_path / "cache" / produced.run_dir.name  # the same configuration, the same name
    make_run_dir(run_dir)
    (tmp_path / "values.json").write_text(json.dumps(values))
    script = (
        "import json, sys; from dfpt_core.workbook import cached_run\n"
        f"values = json.loads(open({str(tmp_path / 'values.json')!r}).read())\n"
        f"r = cached_run('tiny', {str(tmp_path / 'cache')!r}, **values)\n"
        "print('trained' if r.trainer else 'loaded', r.best['student_top1'], flush=True)"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    with run_lock(run_dir):  # this process owns the run, as a parallel job training it would
        waiter = subprocess.Popen(
            [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=env
        )
        line = waiter.stdout.readline()
        assert line.startswith(f"{run_dir.name}: trained by another process; waiting"), line
        for path in produced.run_dir.iterdir():  # the owner finishes its run
            copy = shutil.copytree if path.is_dir() else shutil.copy2
            copy(path, run_dir / path.name)
    out, _ = waiter.communicate(timeout=300)
    assert waiter.returncode == 0
    assert out.split() == ["loaded", str(produced.best["student_top1"])]  # not trained twice
