"""Run records are written atomically (a crash while writing leaves the old file whole), stale
temp files of interrupted writes are removed when a run starts, and the book's run cache treats
a damaged record as missing (it says so and trains again) instead of crashing."""

from __future__ import annotations

import json
import os

import pytest
from conftest import tiny_config, untimed

from dfpt_core.engine import records
from dfpt_core.run.build import run
from dfpt_core.workbook import cached_run


def test_a_crash_while_writing_leaves_the_old_record_whole(tmp_path, monkeypatch):
    path = tmp_path / "metrics.json"
    records.atomic_write_text(path, '{"old": 1}')

    def crash(src, dst):
        raise OSError("killed while writing")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="killed"):
        records.atomic_write_text(path, '{"new": 2}')
    assert json.loads(path.read_text()) == {"old": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no temp file left


def test_stale_temp_files_are_removed_when_a_run_starts(tmp_path, fmnist_root):
    folder = tmp_path / "run"
    (folder / "checkpoints").mkdir(parents=True)
    stale = [folder / ".metrics.json.a1b2.tmp", folder / "checkpoints" / ".last.pt.x9.tmp"]
    for path in stale:
        path.write_bytes(b"\0" * 1024)
    run(tiny_config(tmp_path, fmnist_root, epochs=1))
    assert not any(p.exists() for p in stale)
    assert not list(folder.rglob("*.tmp"))


def test_the_run_cache_retrains_a_run_whose_record_is_damaged(tmp_path, fmnist_root):
    cfg = tiny_config(tmp_path, fmnist_root, epochs=1).to_dict()
    values = {k: v for k, v in cfg.items() if k not in ("name", "out_dir")}
    first = cached_run("tiny", tmp_path, **values)
    assert first.trainer is not None  # trained
    assert cached_run("tiny", tmp_path, **values).trainer is None  # loaded
    (first.run_dir / "metrics.json").write_text("")  # as a kill mid-write used to leave it
    with pytest.warns(UserWarning, match="damaged run record .* trains again"):
        again = cached_run("tiny", tmp_path, **values)
    assert again.trainer is not None and again.run_dir == first.run_dir
    assert untimed(again.history) == untimed(first.history)


def test_the_run_cache_retrains_a_run_that_selected_its_epoch_on_the_test_set(
    tmp_path, fmnist_root
):
    cfg = tiny_config(tmp_path, fmnist_root, epochs=2).to_dict()
    values = {k: v for k, v in cfg.items() if k not in ("name", "out_dir")}
    first = cached_run("tiny", tmp_path, **values)
    record = json.loads((first.run_dir / "metrics.json").read_text())
    del record["selection"]  # as written before runs selected on validation or last
    record["best"] = first.history[0]
    (first.run_dir / "metrics.json").write_text(json.dumps(record))
    with pytest.warns(UserWarning, match="best epoch was chosen on the test set"):
        again = cached_run("tiny", tmp_path, **values)
    assert again.trainer is not None  # trained again from the start, not resumed (new timings)
    assert [h["seconds"] for h in again.history] != [h["seconds"] for h in first.history]
    assert again.best == again.history[-1] and untimed(again.history) == untimed(first.history)
    assert cached_run("tiny", tmp_path, **values).trainer is None  # loaded from now on


def test_the_run_cache_retrains_a_run_whose_method_defaults_changed(tmp_path, fmnist_root):
    """The cache key counts only the values a run sets; a method default that changed under it
    (as DFPT-KD's fusion did) is caught by the hyperparameters the record keeps."""
    cfg = tiny_config(tmp_path, fmnist_root, epochs=1).to_dict()
    values = {k: v for k, v in cfg.items() if k not in ("name", "out_dir")}
    first = cached_run("tiny", tmp_path, **values)
    record = json.loads((first.run_dir / "metrics.json").read_text())
    assert record["hparams_resolved"] == {"label_smoothing": 0.0}  # ce's one, defaulted
    record["hparams_resolved"] = {"label_smoothing": 0.1}  # as if the default had been 0.1
    (first.run_dir / "metrics.json").write_text(json.dumps(record))
    with pytest.warns(UserWarning, match="defaults included.* changed since: label_smoothing"):
        again = cached_run("tiny", tmp_path, **values)
    assert again.trainer is not None
    assert cached_run("tiny", tmp_path, **values).trainer is None
