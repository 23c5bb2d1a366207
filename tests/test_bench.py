"""The benchmark suite: the naive DFPT-KD reference computes what the library's DFPT-KD computes
(so timing one against the other is fair), and `bench/runner.py --quick` writes bench.json in the
documented schema (bench/README.md)."""

from __future__ import annotations

import copy
import importlib
import json
import platform
import statistics
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from dfpt_core.engine.runtime import native_bf16

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


def _check_settings(m: dict, batch: int, peak: dict, step_settings: dict) -> None:
    """A method's (or student's) per-setting numbers: every setting present, bf16 timed iff the
    GEMM peak has bf16 (native), GFLOP/s = FLOPs / time, fraction = GFLOP/s / matching peak, and
    step_ms is fp32 NCHW's."""
    assert set(m["by_setting"]) == set(step_settings)
    assert m["step_ms"] == m["by_setting"]["fp32_nchw"]["step_ms"]
    for name, e in m["by_setting"].items():
        precision = step_settings[name]["precision"]
        timed = "gflops_per_s" in peak[precision]
        assert ("step_ms" in e) is timed and ("skipped" in e) is not timed
        if not timed:
            continue
        assert e["step_ms"] > 0 and len(e["step_ms_all"]) > 0
        assert _close(e["images_per_s"], batch * 1e3 / e["step_ms"])
        assert _close(e["gflops_per_s"], m["flops"] / (e["step_ms"] / 1e3) / 1e9)
        assert _close(e["peak_fraction"], e["gflops_per_s"] / peak[precision]["gflops_per_s"])


@pytest.mark.slow
def test_quick_bench_writes_the_schema(bench, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # a smoke run: never oversubscribe a busy machine
    assert bench.runner.main(["--quick", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "bench.json").read_text())
    table = capsys.readouterr().out
    assert table.startswith(bench.runner.format_table(report))

    assert report["schema_version"] == 2 and report["quick"] is True
    assert {"torch", "threads", "device", "date"} <= set(report["environment"])
    assert report["environment"]["threads"] == 1
    assert all(run["ok"] for run in report["benchmarks"].values())
    assert set(report["benchmarks"]) == set(bench.runner.BENCHMARKS)
    assert set(bench.runner.BENCHMARKS) == {
        "flops", "loader", "memory", "peak", "peer_step", "train_step"
    }  # fmt: skip

    # the GEMM peak, bf16 measured iff the device computes it natively
    peak, native = report["peak"], native_bf16(torch.device(report["environment"]["device"]))
    assert peak["native_bf16"] is native and peak["bf16_evidence"]["native"] is native
    assert peak["fp32"]["gflops_per_s"] > 0
    assert ("gflops_per_s" in peak["bf16"]) is native and ("skipped" in peak["bf16"]) is not native
    step_settings = report["settings"]["train_step"]["step_settings"]
    assert list(step_settings) == [s.name for s in bench.common.SETTINGS]

    pairs = report["pairs"]
    assert set(pairs) == {"resnet32x4-resnet8x4", "resnet20-resnet8"}
    for pair in pairs.values():
        assert pair["batch"] == bench.common.QUICK_BATCH
        methods = pair["methods"]
        assert set(methods) == set(bench.common.ENTRANTS)
        for m in methods.values():
            assert all(m[k] > 0 for k in ("step_ms", "images_per_s", "flops", "peak_mib"))
            assert _close(m["images_per_s"], pair["batch"] * 1e3 / m["step_ms"])
            _check_settings(m, pair["batch"], peak, step_settings)
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

    students = report["students"]
    assert list(students) == [s.student for s in bench.common.STUDENTS]
    for name, m in students.items():
        assert m["method"] == "ce" and m["student"] == name and m["num_classes"] == 10
        assert m["batch"] == bench.common.QUICK_BATCH and m["flops"] > 0
        _check_settings(m, m["batch"], peak, step_settings)
    assert students["resnet32"]["flops"] > students["resnet20"]["flops"]
    c = report["cpu_target"]
    precision = "bf16" if native else "fp32"
    assert c["precision"] == precision
    assert (c["setting"], c["target"]) == bench.runner.CPU_TARGETS[precision]
    assert set(c["students"]) == set(students)
    for name, v in c["students"].items():
        assert v["peak_fraction"] == students[name]["by_setting"][c["setting"]]["peak_fraction"]
        assert v["pass"] is (v["peak_fraction"] >= c["target"])

    pe = report["peer"]
    assert pe["pair"] == "resnet32x4-resnet8x4" and pe["batch"] == bench.common.QUICK_BATCH
    assert pe["fastest"] == ("bf16_channels_last" if native else "fp32_channels_last")
    steps = pe["steps"]
    assert set(steps) == {
        "peer", "ours_fp32", "ours_fastest",
        "teacher_peer", "teacher_ours_fp32", "teacher_ours_fastest",
    }  # fmt: skip
    for v in steps.values():
        assert v["step_ms"] > 0 and _close(v["images_per_s"], pe["batch"] * 1e3 / v["step_ms"])
    ms = {k: v["step_ms"] for k, v in steps.items()}
    assert _close(pe["ours_fp32_ratio"], ms["ours_fp32"] / ms["peer"])
    assert _close(pe["ours_fastest_ratio"], ms["ours_fastest"] / ms["peer"])
    assert _close(pe["teacher_ratio"], ms["teacher_ours_fp32"] / ms["teacher_peer"])
    assert pe["target"] == bench.runner.PEER_TARGET
    assert pe["pass"] is (pe["ours_fp32_ratio"] <= pe["target"])

    lo = report["loader"]
    assert lo["fast_images_per_s"] > 0 and lo["torchvision_images_per_s"] > 0
    assert _close(lo["ratio"], lo["fast_images_per_s"] / lo["torchvision_images_per_s"])
    target = bench.runner.LOADER_TARGET
    assert lo["target"] == target and lo["pass"] is (lo["ratio"] >= target)


def test_native_bf16_reads_the_device():
    """bf16 detection answers a bool with its evidence; unknown devices are False (unsure)."""
    from dfpt_core.engine.runtime import bf16_evidence

    evidence = bf16_evidence("cpu")
    assert evidence["native"] is native_bf16("cpu") and isinstance(evidence["native"], bool)
    assert {"machine", "cpu_capability"} <= set(evidence)
    assert bf16_evidence("meta") == {"native": False, "reason": "not known for device type 'meta'"}


def test_gpu_bench_smoke_path_and_refusal(bench, tmp_path, monkeypatch, capsys):
    """bench/gpu.py runs its CPU smoke path (--device cpu --quick) into its JSON, and refuses a
    CPU run without --quick (and CUDA where there is none). Never asserts a speed."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    gpu = importlib.import_module("gpu")
    assert gpu.main(["--device", "cpu", "--out", str(tmp_path / "x.json")]) == 2
    if not torch.cuda.is_available():
        assert gpu.main(["--out", str(tmp_path / "x.json")]) == 2
        assert "needs CUDA" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()
    out = tmp_path / "gpu.json"
    assert gpu.main(["--device", "cpu", "--quick", "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    assert "synthetic" in record["note"] and "synthetic" in capsys.readouterr().out
    results = record["results"]
    assert set(results) == {*gpu.METHODS, "reference_kd"}
    ref = results["reference_kd"]["images_per_s"]
    for name, r in results.items():
        assert r["images_per_s"] > 0 and r["steps"] == record["settings"]["steps"]
        assert _close(r["images_per_s"], r["steps"] * record["settings"]["batch"] / r["seconds"])
        assert _close(r["projected_epochs_h"], 50000 * 240 / r["images_per_s"] / 3600)
        if name != "reference_kd":
            assert _close(r["speedup_vs_reference_kd"], r["images_per_s"] / ref)


def test_dfpt_layers_splits_every_flop_and_millisecond_into_families(bench, monkeypatch):
    """bench/dfpt_layers.py: the per-family FLOPs of a step add up to flops.py's count of the same
    step, and the ratios are those of the sums. Never asserts a speed."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    layers, flops = importlib.import_module("dfpt_layers"), importlib.import_module("flops")
    assert layers.family("aten::mkldnn_convolution") == "convolution"
    assert layers.family("aten.convolution_backward") == "convolution"
    assert layers.family("aten::native_batch_norm_backward") == "batch norm"
    assert layers.family("aten.addmm") == "matrix product"
    assert layers.family("aten::add_").startswith("other")
    pair = bench.common.PAIRS[1]
    r = layers.compare(pair, bench.common.FP32, CPU, size=4, steps=1)
    for method in layers.METHODS:
        step = bench.common.train_step(
            bench.common.build(method, pair, CPU), *bench.common.batch(pair, 4, CPU)
        )
        total = flops.step_flops(step) / 1e9
        assert sum(f[f"{method}_gflop"] for f in r["families"]) == pytest.approx(total)
        assert r["gflop_per_step"][method] == pytest.approx(total)
        assert sum(f[f"{method}_ms"] for f in r["families"]) == pytest.approx(
            r["ms_per_step"][method]
        )
    assert r["flop_ratio"] == pytest.approx(
        r["gflop_per_step"]["dfpt_kd"] / r["gflop_per_step"]["kd"]
    )
    assert r["time_over_flop_ratio"] == pytest.approx(r["time_ratio"] / r["flop_ratio"])


def _quick_main(script: str, tmp_path, monkeypatch):
    """Run bench/<script>.py --quick on one thread through its main(): (module, its JSON)."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    module = importlib.import_module(script)
    out = tmp_path / f"{script}.json"
    monkeypatch.setattr("sys.argv", [f"{script}.py", "--quick", "--out", str(out)])
    module.main()
    return module, json.loads(out.read_text())


def test_students_limit_quick_run_keeps_its_sums(bench, tmp_path, monkeypatch):
    """bench/students_limit.py --quick: every student at each batch, the FLOPs of a step scale
    with the batch, GFLOP/s and peak fractions follow from the stored numbers, the family shares
    add up to 1 and the convolutions-only bound is the step's FLOPs over the convolutions' time.
    Never asserts a speed."""
    limit, record = _quick_main("students_limit", tmp_path, monkeypatch)
    peak = record["results"]["peak_gflops_per_s"]
    assert record["settings"]["batches"] == list(limit.QUICK_BATCHES)
    students = record["results"]["students"]
    assert set(students) == {s.name for s in bench.common.STUDENTS}
    for r in students.values():
        small, large = (r["by_batch"][str(b)] for b in limit.QUICK_BATCHES)
        ratio = limit.QUICK_BATCHES[1] / limit.QUICK_BATCHES[0]
        # convolutions and the classifier scale with the batch; the optimizer's FLOPs do not
        assert large["flops"] == pytest.approx(ratio * small["flops"], rel=0.01)
        for row in (small, large):
            assert _close(row["gflops_per_s"], row["flops"] / row["step_ms"] / 1e6)
            assert _close(row["peak_fraction"], row["gflops_per_s"] / peak)
        assert sum(f["share"] for f in r["families"].values()) == pytest.approx(1, abs=1e-3)
        conv_ms = r["families"]["convolution"]["ms"]
        bound = small["flops"] / conv_ms / 1e6 / peak  # the step's FLOPs at the convs' pace
        assert r["conv_only_fraction"] == pytest.approx(bound, rel=1e-2)
        assert "compile" not in r  # --quick does not compile


@pytest.mark.slow
def test_malloc_times_both_modes_in_their_own_processes(bench, tmp_path, monkeypatch):
    """bench/malloc.py --quick: its entrants in both allocator modes, each in its own child
    process (keep applies on Linux with glibc), the speedup system / keep of the stored medians.
    Never asserts a speed."""
    malloc, record = _quick_main("malloc", tmp_path, monkeypatch)
    glibc = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
    assert record["settings"]["keep_applies"] is glibc
    steps = record["results"]["steps"]
    assert set(steps) == set(list(malloc.ENTRANTS)[:2]) and "whole_runs" not in record["results"]
    for row in steps.values():
        for mode in malloc.MODES:
            assert len(row[mode]["step_ms_children"]) == record["settings"]["repeats"]
            assert row[mode]["step_ms"] == statistics.median(row[mode]["step_ms_children"])
        assert _close(row["speedup"], row["system"]["step_ms"] / row["keep"]["step_ms"])


@pytest.mark.slow
def test_malloc_whole_runs_pair_the_modes(bench, monkeypatch, fmnist_root):
    """bench/malloc.py's whole runs (here tiny ones, through `dfpt train`): both modes per
    repeat, the ratio the geometric mean of the paired system / keep ratios, inside its
    interval. Never asserts a speed."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    malloc = importlib.import_module("malloc")
    tiny = {"data_root": str(fmnist_root), "limit_train": 96, "limit_test": 64, "val_size": 0,
            "epochs": 1, "batch_size": 32}  # fmt: skip
    cpu = malloc.recipe_train_values("cpu")
    monkeypatch.setattr(malloc, "recipe_train_values", lambda scale: {**cpu, **tiny})
    runs = malloc.whole_runs(2, methods=("kd",))
    for m in runs["kd"].values():
        ratios = [s / k for s, k in zip(m["system"], m["keep"], strict=True)]
        assert len(ratios) == 2 and all(r > 0 for r in ratios)
        assert m["ratio"] == pytest.approx(statistics.geometric_mean(ratios), rel=1e-2)
        assert m["ratio_ci95"][0] <= m["ratio"] <= m["ratio_ci95"][1]
