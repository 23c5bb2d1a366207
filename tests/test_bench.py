"""The benchmark suite: the naive DFPT-KD reference computes what the library's DFPT-KD computes
(so timing one against the other is fair), and `bench/runner.py --quick` writes bench.json in the
documented schema (bench/README.md)."""

from __future__ import annotations

import copy
import importlib
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

CPU = torch.device("cpu")
BENCH_DIR = Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture
def bench(monkeypatch):
    """bench/_common.py, bench/_naive.py and bench/runner.py (the scripts import each other by
    bare name)."""
    monkeypatch.syspath_prepend(str(BENCH_DIR))
    return SimpleNamespace(
        common=importlib.import_module("_common"),
        naive=importlib.import_module("_naive"),
        runner=importlib.import_module("runner"),
    )


def test_naive_reference_matches_dfpt_kd(bench):
    pair = next(p for p in bench.common.PAIRS if p.name == "resnet20-resnet8")
    ours = bench.common.build("dfpt_kd", pair, CPU)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # off the identity start, so every prompt parameter gets a gradient
        for p in (p for m in ours.dual.prompt_modules() for p in m.parameters()):
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    naive = bench.naive.naive_dfpt_kd(copy.deepcopy(ours))
    images, labels = bench.common.batch(pair, 8, CPU)
    totals, grads = [], []
    for model in (ours, naive):
        _, losses = model(images, labels)
        total = sum(losses.values())
        total.backward()
        totals.append(total.detach())
        grads.append([p.grad for group in model.param_groups(1.0, 0.0) for p in group["params"]])
    torch.testing.assert_close(totals[1], totals[0], rtol=1e-5, atol=1e-5)
    assert len(grads[0]) == len(grads[1]) > 0
    assert all(g is not None and g.abs().sum() > 0 for g in grads[0])
    for a, b in zip(grads[0], grads[1], strict=True):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
    # and it is the naive computation: the frozen backbone's weight gradients, ours has none
    assert all(p.grad is None for p in ours.teacher.parameters())
    missing = {n for n, p in naive.teacher.named_parameters() if p.grad is None}
    assert missing == {"fc.weight", "fc.bias"}  # only the head, which the prompt path replaces


def _close(value: float, expected: float) -> bool:
    return value == pytest.approx(expected, rel=2e-3)


@pytest.mark.slow
def test_quick_bench_writes_the_schema(bench, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # a smoke run: never oversubscribe a busy machine
    assert bench.runner.main(["--quick", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "bench.json").read_text())
    table = capsys.readouterr().out
    assert table.startswith(bench.runner.format_table(report))

    assert report["schema_version"] == 1 and report["quick"] is True
    assert {"torch", "threads", "device", "date"} <= set(report["environment"])
    assert report["environment"]["threads"] == 1
    assert all(run["ok"] for run in report["benchmarks"].values())
    assert set(report["benchmarks"]) == {"flops", "loader", "memory", "train_step"}

    pairs = report["pairs"]
    assert set(pairs) == {"resnet32x4-resnet8x4", "resnet20-resnet8"}
    for pair in pairs.values():
        assert pair["batch"] == bench.common.QUICK_BATCH
        methods = pair["methods"]
        assert set(methods) == set(bench.common.ENTRANTS)
        for m in methods.values():
            assert all(m[k] > 0 for k in ("step_ms", "images_per_s", "flops", "peak_mib"))
            assert _close(m["images_per_s"], pair["batch"] * 1e3 / m["step_ms"])
        kd, ours, naive = methods["kd"], methods["dfpt_kd"], methods["dfpt_kd_naive"]
        o = pair["dfpt_overhead"]
        assert _close(o["time_ratio"], ours["step_ms"] / kd["step_ms"])
        assert _close(o["flop_ratio"], ours["flops"] / kd["flops"])
        assert _close(o["time_per_flop_ratio"], o["time_ratio"] / o["flop_ratio"])
        inside = o["time_per_flop_ratio"] <= bench.runner.OVERHEAD_TARGET
        assert o["target"] == bench.runner.OVERHEAD_TARGET and o["pass"] is inside
        s = pair["naive_speedup"]
        assert _close(s["time_ratio"], naive["step_ms"] / ours["step_ms"])
        assert _close(s["flop_ratio"], naive["flops"] / ours["flops"])
        assert _close(s["memory_ratio"], naive["peak_mib"] / ours["peak_mib"])
        assert s["flop_ratio"] > 1  # recomputing the prefix and the backbone's weight gradients
        assert ours["flops"] > kd["flops"] > methods["ce"]["flops"]

    lo = report["loader"]
    assert lo["fast_images_per_s"] > 0 and lo["torchvision_images_per_s"] > 0
    assert _close(lo["ratio"], lo["fast_images_per_s"] / lo["torchvision_images_per_s"])
    target = bench.runner.LOADER_TARGET
    assert lo["target"] == target and lo["pass"] is (lo["ratio"] >= target)
