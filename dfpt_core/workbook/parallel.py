"""Independent runs in parallel: `jobs` worker processes, each pinned to one device of a server
(several workers may share a GPU) or, on the CPU, to its share of the cores. The run cache's
locks keep them consistent: a run two workers need is trained by one, waited for and loaded by
the other (`cache.cached_run`)."""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed


def slots(jobs: int, devices: Sequence[str] | None) -> list[dict[str, str]]:
    """The environment of each of `jobs` workers: worker k sees CUDA device
    `devices[k % len(devices)]` only (CUDA_VISIBLE_DEVICES), or, without devices, gets
    cpu_count // jobs threads (OMP_NUM_THREADS) so the workers do not oversubscribe the cores."""
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    if devices:
        return [{"CUDA_VISIBLE_DEVICES": str(devices[k % len(devices)])} for k in range(jobs)]
    threads = max(1, (os.cpu_count() or 1) // jobs)
    return [{"OMP_NUM_THREADS": str(threads)} for _ in range(jobs)]


def _claim_slot(queue, parent: int) -> None:
    """Worker initialiser: take one slot's environment (the kernels papermill starts inherit it;
    torch, when the task's module imported it already, gets the slot's thread count), and stop
    as on SIGTERM if the parent dies (`_watch_parent`)."""
    slot = queue.get()
    os.environ.update(slot)
    if "OMP_NUM_THREADS" in slot and "torch" in sys.modules:  # imported with the task's module
        sys.modules["torch"].set_num_threads(int(slot["OMP_NUM_THREADS"]))
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()


def _watch_parent(parent: int) -> None:
    """Once the parent is gone, SIGTERM this worker every 2 s until it ends: a run in progress
    stops at its next step with a checkpoint, and the tasks already queued to the worker are
    refused the same way instead of training orphaned."""
    while os.getppid() == parent:
        time.sleep(1.0)
    while True:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(2.0)


def run_parallel(
    fn: Callable, tasks: Iterable[tuple], jobs: int = 1, devices: Sequence[str] | None = None
) -> Iterator[tuple[tuple, object]]:
    """(task, fn(*task)) for every task as it finishes, on `jobs` spawned worker processes
    (`slots`). An exception raised by fn is yielded as the result, not raised, so one failure
    does not stop the others."""
    tasks = list(tasks)
    context = multiprocessing.get_context("spawn")  # no forked torch or kernel state
    queue = context.Queue()
    for env in slots(jobs, devices):
        queue.put(env)
    with ProcessPoolExecutor(
        jobs, context, initializer=_claim_slot, initargs=(queue, os.getpid())
    ) as pool:
        futures = {pool.submit(fn, *task): task for task in tasks}
        for future in as_completed(futures):
            error = future.exception()
            yield futures[future], error if error is not None else future.result()
