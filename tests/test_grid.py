"""A lesson's grid of runs (workbook/grid.py) and the run cache's replay switches: runs trained
in worker processes equal runs trained in order; replay-only mode refuses to train, naming the
run and the command that regenerates the shipped runs; `--retrain` ignores shipped runs; the run
log lists the runs a notebook used. Also the power estimate that sizes a lesson's seeds and the
student-width knob of the CIFAR ResNets."""

from __future__ import annotations

import statistics

import pytest
from conftest import tiny_config, tiny_values, untimed

import dfpt_core.workbook as nb
from dfpt_core.models import count_params, create_model
from dfpt_core.workbook import cache
from dfpt_core.workbook import grid as grid_module
from dfpt_core.workbook.grid import missing
from dfpt_core.workbook.stats import describe_design, pilot_design, power, seeds_needed


def grid(tmp_path, fmnist_root, seeds=(0, 1)):
    values = tiny_config(tmp_path, fmnist_root, epochs=1, limit_train=64).to_dict()
    values = {k: v for k, v in values.items() if k not in ("name", "out_dir")}
    return [nb.Run("tiny", {**values, "seed": s}) for s in seeds]


def test_a_grid_trained_on_workers_equals_one_trained_in_order(tmp_path, fmnist_root, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    runs = grid(tmp_path, fmnist_root)
    in_order = nb.run_grid(runs, tmp_path / "serial")
    assert missing(runs, tmp_path / "parallel") == runs
    on_workers = nb.run_grid(runs, tmp_path / "parallel", jobs=2)
    assert missing(runs, tmp_path / "parallel") == []
    assert all(r.trainer is None for r in on_workers)  # trained by the workers, loaded here
    for a, b in zip(in_order, on_workers, strict=True):
        assert a.run_dir.name == b.run_dir.name
        assert untimed(a.history) == untimed(b.history)
    assert untimed(in_order[0].history) != untimed(in_order[1].history)  # two seeds, two runs


def test_replay_only_refuses_to_train_and_names_the_run(tmp_path, fmnist_root, monkeypatch):
    (run,) = grid(tmp_path, fmnist_root, seeds=(3,))
    monkeypatch.setenv(cache.REPLAY_ONLY, "1")
    with pytest.raises(cache.MissingRunError) as error:
        nb.cached_run(run.name, tmp_path, **run.values)
    assert error.value.args[0].startswith("tiny-") and cache.REGENERATE in str(error.value)
    assert not (tmp_path / "tiny").exists() and not list(tmp_path.glob("tiny-*/checkpoints"))
    monkeypatch.delenv(cache.REPLAY_ONLY)
    trained = nb.cached_run(run.name, tmp_path, **run.values)
    monkeypatch.setenv(cache.REPLAY_ONLY, "1")
    assert nb.cached_run(run.name, tmp_path, **run.values).history == trained.history


def test_the_run_log_lists_every_run_returned(tmp_path, fmnist_root, monkeypatch):
    log = tmp_path / "used.log"
    monkeypatch.setenv(cache.RUN_LOG, str(log))
    runs = nb.run_grid(grid(tmp_path, fmnist_root), tmp_path)
    nb.run_grid(grid(tmp_path, fmnist_root)[:1], tmp_path)
    lines = log.read_text().split()
    assert lines == [str(r.run_dir.resolve()) for r in runs] + [str(runs[0].run_dir.resolve())]


def test_ignoring_shipped_runs_hides_them(monkeypatch):
    name = next(iter(cache.shipped_manifest()["runs"]))
    assert cache.shipped_run(name) is not None
    monkeypatch.setenv(cache.IGNORE_SHIPPED, "1")
    assert cache.shipped_run(name) is None


def test_power_and_seeds_needed():
    # Phi(|d| sqrt(n) / sd - t_975(n - 1)): d = sd = 1, n = 5 -> Phi(2.2361 - 2.776) = 0.2946
    assert power(1.0, 1.0, 5) == pytest.approx(0.2946, abs=1e-4)
    assert power(1.0, -1.0, 5) == power(1.0, 1.0, 5)
    assert power(0.5, 1.0, 5) > power(1.0, 1.0, 5) > power(1.0, 1.0, 3)
    n = seeds_needed(1.0, 1.0)
    assert power(1.0, 1.0, n) >= 0.8 > power(1.0, 1.0, n - 1)
    assert seeds_needed(1.0, 0.05) is None
    with pytest.raises(ValueError, match="sd must be > 0"):
        power(0.0, 1.0, 5)


def test_width_scales_every_layer_of_a_cifar_resnet():
    public = create_model("resnet8", num_classes=10, in_chans=1)
    assert count_params(create_model("resnet8", num_classes=10, in_chans=1, width=1.0)) == (
        count_params(public)
    )
    half = create_model("resnet8", num_classes=10, in_chans=1, width=0.5)
    assert half.conv1.out_channels == 8 and half.fc.in_features == 32
    assert count_params(half) == 19810  # 8-8-16-32 channels
    with pytest.raises(ValueError, match="width must be > 0"):
        create_model("resnet8", width=0)


def test_distil_run_is_the_run_distil_loads(tmp_path, fmnist_root, monkeypatch):
    values = tiny_values(tmp_path, fmnist_root, limit_train=64)
    common = {k: v for k, v in values.items() if k not in ("name", "out_dir", "method", "epochs")}
    del common["student"]
    teacher = nb.teacher("resnet8", tmp_path, common, 1)
    run = nb.distil_run("dkd", teacher, "resnet8", common, 1, tag="x", beta=2.0)
    assert run.name == "resnet8-from-resnet8-dkd-x"
    (grid_result,) = nb.run_grid([run], tmp_path)
    monkeypatch.setenv(cache.REPLAY_ONLY, "1")  # distil finds the run the grid trained
    found = nb.distil("dkd", teacher, "resnet8", tmp_path, common, 1, tag="x", beta=2.0)
    assert found.run_dir == grid_result.run_dir and found.history == grid_result.history
    assert found.config.method_args == {"beta": 2.0}


def test_pilot_design_reads_the_first_seeds_and_sizes_the_design():
    diffs = [[1.0, 3.0, 2.0, 2.5, 1.5], [0.0, 0.5, 4.0, -1.0, 2.0], [2.0, 2.0 + 2**0.5, 0, 1, 2]]
    d = pilot_design(diffs, effect=1.0)
    # the pilot's spread of each comparison: |a - b| / sqrt(2); the median of 1.414, 0.354, 1
    assert d["pilot_sd"] == pytest.approx(1.0)
    assert d["needed"] == seeds_needed(1.0, 1.0) and d["n"] == 5
    assert d["power"] == pytest.approx(power(1.0, 1.0, 5)) and d["power_2x"] > d["power"]
    sd = sorted(statistics.stdev(x) for x in diffs)[1]  # the median spread
    assert d["sd"] == pytest.approx(sd) and d["power_all"] == pytest.approx(power(sd, 1.0, 5))
    text = describe_design(d)
    assert "1.00 points" in text and f"about {d['needed']} seeds" in text
    with pytest.raises(ValueError, match="pilot needs >= 2 seeds"):
        pilot_design([[1.0]])


def test_run_grid_trains_in_order_with_the_live_dashboard_when_asked(tmp_path, monkeypatch):
    seen = []

    def fake_cached_run(name, cache_dir, live=False, **values):
        seen.append((name, live, values["seed"]))
        return name

    monkeypatch.setattr(grid_module, "cached_run", fake_cached_run)
    runs = [nb.Run("a", {"seed": 0}), nb.Run("b", {"seed": 1})]
    assert nb.run_grid(runs, tmp_path, live=True) == ["a", "b"]
    assert nb.run_grid(runs, tmp_path) == ["a", "b"]
    assert seen == [("a", True, 0), ("b", True, 1), ("a", False, 0), ("b", False, 1)]
