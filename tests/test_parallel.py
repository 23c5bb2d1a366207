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


def worker_threads(task: int) -> int:
    import torch

    return torch.get_num_threads()


def test_cpu_workers_share_the_cores_even_when_torch_came_first():
    """This module imports dfpt_core (and with it torch) in every spawned worker before the
    worker takes its slot: the slot's thread count must still reach torch."""
    threads = dict(run_parallel(worker_threads, [(0,), (1,)], jobs=2))
    assert set(threads.values()) == {max(1, (os.cpu_count() or 1) // 2)}


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


def wait_for_sigterm(folder: str) -> None:
    """A task that says it started, then waits; on SIGTERM it says so and exits."""
    import signal
    import time
    from pathlib import Path

    def stop(signum, frame):
        (Path(folder) / "terminated").write_text(str(os.getpid()))
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    (Path(folder) / "started").write_text(str(os.getpid()))
    time.sleep(120)


def test_a_worker_stops_as_on_sigterm_when_its_parent_dies(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    tests = os.path.dirname(__file__)
    parent = subprocess.Popen([
        sys.executable, "-c",
        f"import sys; sys.path.insert(0, {tests!r}); from test_parallel import wait_for_sigterm; "
        "from dfpt_core.workbook.parallel import run_parallel; "
        f"list(run_parallel(wait_for_sigterm, [({str(tmp_path)!r},)], jobs=1))",
    ])  # fmt: skip
    deadline = time.time() + 60
    while not (tmp_path / "started").exists() and time.time() < deadline:
        time.sleep(0.2)
    assert (tmp_path / "started").exists()
    parent.send_signal(signal.SIGKILL)  # no chance to clean up after its workers
    parent.wait()
    deadline = time.time() + 15
    while not (tmp_path / "terminated").exists() and time.time() < deadline:
        time.sleep(0.2)
    assert (tmp_path / "terminated").read_text() == (tmp_path / "started").read_text()
