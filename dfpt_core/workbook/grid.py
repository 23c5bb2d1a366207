"""A lesson's grid of runs (teachers x student widths x seeds, methods x seeds, ...): the runs
missing from the cache trained first, on `jobs` worker processes when asked, then every run
loaded in order. A notebook and the script that regenerates the shipped runs train the same
grid."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from ..methods.shared_outputs import share_in_this_process
from .cache import RunResult, cached_run, distil_spec, find_finished, run_config
from .parallel import run_parallel
from .viz import is_live


@dataclass(frozen=True)
class Run:
    """One cached run: `cached_run(name, cache_dir, **values)`."""

    name: str
    values: dict = field(hash=False)


def distil_run(*args, **kwargs) -> Run:
    """The run `cache.distil(method, teacher, student, cache_dir, common, epochs, ...)` trains
    or loads, as one run of a grid: `distil_run(method, teacher, student, common, epochs,
    tag="", **method_args)` (the arguments of `cache.distil_spec`)."""
    return Run(*distil_spec(*args, **kwargs))


def _train(run: Run, cache_dir: str) -> str:
    """In a worker: train (or find) one run, sharing teacher outputs with the worker's other
    runs (`shared_outputs`: bit-identical to computing them)."""
    share_in_this_process()
    return str(cached_run(run.name, cache_dir, **run.values).run_dir)


def missing(runs: Sequence[Run], cache_dir) -> list[Run]:
    """The runs of `runs` that are neither finished in `cache_dir` nor shipped."""
    return [
        r for r in runs if find_finished(run_config(r.name, cache_dir, r.values), cache_dir) is None
    ]


def run_grid(
    runs: Sequence[Run], cache_dir, jobs: int = 1, label: str = "runs", live: bool = False
) -> list[RunResult]:
    """Every run of `runs`, in order: loaded where finished or shipped, else trained (with the
    live dashboard when `live`, as `cached_run`); with `jobs` > 1 the missing ones train first
    on that many worker processes (each with its share of the cores, `parallel.slots`). A run
    that fails in a worker is raised, naming it."""
    cache_dir = str(Path(cache_dir))
    todo = missing(runs, cache_dir) if jobs > 1 else []
    if len(todo) > 1:
        bar = tqdm(
            total=len(todo), desc=f"training {label} on {jobs} workers", disable=not is_live(True)
        )
        for (run, _), outcome in run_parallel(_train, [(r, cache_dir) for r in todo], jobs):
            if isinstance(outcome, BaseException):
                raise RuntimeError(f"run {run.name} failed in a worker: {outcome}") from outcome
            bar.update(1)
        bar.close()
    return [
        cached_run(r.name, cache_dir, live=live, **r.values)
        for r in tqdm(runs, desc=label, disable=len(runs) < 2 or not is_live(True))
    ]
