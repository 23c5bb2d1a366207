"""Independent runs in parallel (`workbook.parallel`): each worker pinned to its device or its
share of the cores, every task's result (or its exception) returned."""

from __future__ import annotations

import os

import pytest

from dfpt_core.workbook.parallel import run_parallel, slots


def test_slots_share_devices_round_robin_and_cores_evenly(monkeypatch):
    assert slots(5, ["0", "1"]) == [{"CUDA_VISIBLE_DEVICES": d} for d in "01010"]
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    assert slots(4, None) == [{"OMP_NUM_THREADS": "4"}] * 4
    assert slots(32, None) == [{"OMP_NUM_THREADS": "1"}] * 32  # never 0 threads
    with pytest.raises(ValueError, match="jobs must be >= 1"):
        slots(0, None)


def worker_view(task: int) -> tuple[int, str, str]:
    """What a worker sees: its pid and its slot's environment; task 3 fails."""
    if task == 3:
        raise KeyError("task 3 fails on purpose")
    return os.getpid(), os.environ.get("CUDA_VISIBLE_DEVICES"), os.environ.get("OMP_NUM_THREADS")


def test_run_parallel_pins_each_worker_and_returns_every_result():
    results = dict(run_parallel(worker_view, [(t,) for t in range(6)], jobs=2, devices=["4", "6"]))
    assert sorted(results) == [(t,) for t in range(6)]
    failed = results.pop((3,))
    assert isinstance(failed, KeyError) and "on purpose" in str(failed)  # the others still ran
    by_pid = {pid: device for pid, device, _ in results.values()}
    assert len(by_pid) <= 2 and set(by_pid.values()) <= {"4", "6"}
    assert all(pid != os.getpid() for pid in by_pid)  # in worker processes
    # one pid always has one device: a worker keeps the slot it claimed
    assert all(device == by_pid[pid] for pid, device, _ in results.values())
