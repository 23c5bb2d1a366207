"""Run the book's notebooks headless with papermill at a scale, and index the results."""

from __future__ import annotations

import ast
import html
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import yaml

from ..run.config import TrainConfig
from ..run.recipes import SCALES, recipe
from .cache import IGNORE_SHIPPED
from .checkout import BOOK_DIR, runs_dir
from .parallel import run_parallel


def print_now(line: str) -> None:
    """print, flushed (progress lines reach a pipe or a log as they happen)."""
    print(line, flush=True)


def list_notebooks(book_dir: Path = BOOK_DIR) -> list[Path]:
    """The numbered notebooks `NN_name.ipynb`, in order."""
    return sorted(p for p in book_dir.glob("[0-9][0-9]_*.ipynb"))


#: The book's parameters that are its scale's recipe (`dfpt_core.run.recipes`): parameter ->
#: recipe key. The notebooks' training settings are the recipe's, so a notebook run and
#: `dfpt train --scale <scale>` share data, batch, lr, seed and lengths.
FROM_RECIPE = {
    "seed": "seed",
    "device": "device",
    "amp": "amp",
    "val_size": "val_size",
    "dataset": "dataset",
    "in_chans": "in_chans",
    "limit_train": "limit_train",
    "limit_test": "limit_test",
    "batch_size": "batch_size",
    "lr": "lr",
    "teacher_epochs": "teacher_epochs",
    "student_epochs": "epochs",
}


def recipe_params(scale: str) -> dict:
    """The book's parameters that come from `scale`'s recipe (`FROM_RECIPE`), plus
    `teacher_checkpoint`: "published" where the recipe's teachers are the published ones, else
    None (the notebook trains its teacher, or loads the shipped one)."""
    values = {**TrainConfig().to_dict(), **recipe(scale)}
    params = {name: values[key] for name, key in FROM_RECIPE.items()}
    params["teacher_checkpoint"] = "published" if values["teachers"] == "published" else None
    return params


def load_params(scale: str, book_dir: Path = BOOK_DIR) -> dict:
    """Parameters of a scale preset: the scale's recipe (`recipe_params`), overlaid with the
    notebook-specific ones in book/params/<scale>.yaml."""
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")
    with open(book_dir / "params" / f"{scale}.yaml") as f:
        return {**recipe_params(scale), **(yaml.safe_load(f) or {})}


def select(notebooks: list[Path], only: list[str] | None) -> list[Path]:
    """Notebooks whose number or name matches one of `only` (all when empty)."""
    if not only:
        return notebooks
    chosen = [
        nb
        for nb in notebooks
        if any(
            nb.stem == o or nb.stem.startswith(f"{o}_") or nb.stem.split("_", 1)[0] == o.zfill(2)
            for o in only
        )
    ]
    if not chosen:
        names = ", ".join(nb.stem for nb in notebooks)
        raise ValueError(f"--only {only} matches no notebook; notebooks: {names}")
    return chosen


def run_book(
    scale: str = "cpu",
    only: list[str] | None = None,
    out_root: Path | None = None,
    in_place: bool = False,
    book_dir: Path = BOOK_DIR,
    echo: Callable[[str], None] = print_now,
    jobs: int = 1,
    devices: list[str] | None = None,
    retrain: bool = False,
    run_jobs: int | None = None,
) -> Path:
    """Execute the notebooks with papermill into runs/book-<scale>/ and write index.html.

    Each notebook gets those of the scale's parameters it declares, plus `scale`, `out_dir`
    (its own results folder), `cache_dir` (runs shared across notebooks), `results_root` (the
    runs folder, $DFPT_RUNS_DIR or the checkout's runs/) and `live=False`.
    With `in_place`, the executed notebooks replace the committed ones, run with their own
    defaults (nothing injected; only notebooks whose default scale is `scale`), which is what
    nbval compares against. With `retrain`, shipped runs are ignored (DFPT_IGNORE_SHIPPED=1)
    and runs go to a cache of their own, runs/book-<scale>/cache-retrain/ (resumable: a second
    call continues it). `run_jobs` is the notebooks' `jobs` parameter: how many runs of a
    notebook's grid train at once.
    With `jobs` > 1 or `devices`, the notebooks run in parallel worker processes
    (`parallel.run_parallel`: several per GPU, across the GPUs listed, or a share of the CPU
    cores each); the notebooks that collect results (they declare `results_root`) run after
    the others. A run two notebooks need is trained once (the run cache waits for it).
    Kernels run with DFPT_HEADLESS=1 and log errors only. Progress goes to `echo`: a line when
    each notebook starts (with its time on the last run, when known) and ends (with an estimate
    of what is left), then a table of times, the failures with the command that re-runs each,
    and the index. Raises RuntimeError listing the notebooks that failed, after running all.
    """
    import papermill as pm  # heavy import, only needed here

    if jobs < 1 or (run_jobs is not None and run_jobs < 1):
        raise ValueError(f"jobs and run_jobs must be >= 1, got {jobs} and {run_jobs}")
    if in_place and retrain:
        raise ValueError("--in-place replays the notebooks' own defaults; retrain without it")
    os.environ["DFPT_HEADLESS"] = "1"  # inherited by the kernels papermill starts
    if retrain:
        os.environ[IGNORE_SHIPPED] = "1"
    params = load_params(scale, book_dir)
    runs_root = Path(out_root or runs_dir()).resolve()
    run_dir = runs_root / f"book-{scale}"
    run_dir.mkdir(parents=True, exist_ok=True)
    last = last_times(run_dir)
    chosen = select(list_notebooks(book_dir), only)
    if in_place:
        chosen = [nb for nb in chosen if default_scale(nb) == scale]
        if not chosen:
            raise ValueError(f"--in-place: no chosen notebook defaults to scale {scale!r}")
    where = f" on {jobs} workers" + (f", devices {', '.join(devices)}" if devices else "")
    echo(f"dfpt book: {len(chosen)} notebooks at {scale} scale -> {run_dir}"
         + (where if jobs > 1 or devices else ""))  # fmt: skip
    tasks, collectors = [], []
    for nb in chosen:
        declared = pm.inspect_notebook(str(nb))  # pass only what the notebook declares
        given = {
            **params,
            "scale": scale,
            "out_dir": str(run_dir / nb.stem),
            "live": False,
            "cache_dir": str(run_dir / ("cache-retrain" if retrain else "cache")),
            **({"jobs": run_jobs} if run_jobs else {}),
            "results_root": str(runs_root),  # 09 collects every run under it
        }
        target = nb if in_place else run_dir / nb.name
        if in_place:
            drop_injected_parameters(nb)
        parameters = {} if in_place else {k: v for k, v in given.items() if k in declared}
        task = (str(nb), str(target), parameters, str(book_dir))
        (collectors if "results_root" in declared else tasks).append(task)
    results, begin = [], time.time()
    position = {str(nb): i for i, nb in enumerate(chosen, 1)}

    def started(task, what="started"):
        nb = Path(task[0])
        known = f" (last run {clock(last[nb.name])})" if nb.name in last else ""
        echo(f"[{position[task[0]]}/{len(chosen)}] {nb.stem}: {what}{known}")

    def one_by_one(wave):
        for task in wave:
            started(task)
            yield task, execute_notebook(*task)

    for wave in (tasks, collectors):
        if jobs > 1 or devices:
            for task in wave:
                started(task, "queued")
            finished = run_parallel(execute_notebook, wave, jobs, devices)
        else:
            finished = one_by_one(wave)
        for task, outcome in finished:
            if isinstance(outcome, Exception):  # the worker's own failure, not the notebook's
                outcome = (describe_failure(outcome), 0.0)
            failure, seconds = outcome
            nb, target = Path(task[0]), Path(task[1])
            results.append(
                {
                    "notebook": nb.name,
                    "status": "ok" if failure is None else "failed",
                    "seconds": seconds,
                    "output": str(to_html(target, run_dir)) if target.is_file() else "",
                    "out_dir": str(run_dir / nb.stem),
                    **({"failure": failure} if failure else {}),
                }
            )
            done = {r["notebook"] for r in results}
            left = [last.get(n.name) for n in chosen if n.name not in done]
            estimate = (
                f"; about {clock(sum(left) / jobs)} left by the last run's times"
                if left and None not in left
                else ""
            )
            status = "ok" if failure is None else f"FAILED in cell {failure['cell']}"
            echo(
                f"[{position[task[0]]}/{len(chosen)}] {nb.stem}: {status} in {clock(seconds)}"
                f" (elapsed {clock(time.time() - begin)}{estimate})"
            )
    results.sort(key=lambda r: r["notebook"])
    record = {"scale": scale, "runs": merge_runs(run_dir, results)}
    (run_dir / "book_run.json").write_text(json.dumps(record, indent=2))
    index = write_index(run_dir, record["runs"], scale)
    echo(summary(results, last, scale, index))
    failed = [r for r in results if r["status"] != "ok"]
    if failed:
        raise RuntimeError(f"{len(failed)} of {len(results)} notebooks failed (see above)")
    return run_dir


def default_scale(notebook: Path) -> str:
    """The scale a notebook runs at with its own defaults (its `scale` parameter)."""
    import papermill as pm

    return ast.literal_eval(pm.inspect_notebook(str(notebook))["scale"]["default"])


def execute_notebook(
    notebook: str, target: str, parameters: dict, cwd: str
) -> tuple[dict | None, float]:
    """Run one notebook with papermill into `target`: (the failure, or None; seconds)."""
    import papermill as pm

    start, failure = time.time(), None
    try:
        pm.execute_notebook(
            notebook,
            target,
            kernel_name="python3",
            cwd=cwd,
            parameters=parameters,
            log_output=False,
            progress_bar=False,
            extra_arguments=["--IPKernelApp.log_level=ERROR"],  # no TCP warning per kernel
        )
    except Exception as e:  # papermill raises PapermillExecutionError with the cell error
        failure = describe_failure(e)
    return failure, time.time() - start


def clock(seconds: float) -> str:
    """`42 s` or `3 min 05 s`."""
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


def last_times(run_dir: Path) -> dict[str, float]:
    """Seconds each notebook took on its last successful run in `run_dir` (book_run.json)."""
    try:
        runs = json.loads((run_dir / "book_run.json").read_text())["runs"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    return {r["notebook"]: r["seconds"] for r in runs if r.get("status") == "ok"}


def merge_runs(run_dir: Path, results: list[dict]) -> list[dict]:
    """This run's rows, plus the earlier rows of notebooks it did not run (`--only`)."""
    try:
        earlier = json.loads((run_dir / "book_run.json").read_text())["runs"]
    except (OSError, ValueError, KeyError, TypeError):
        earlier = []
    ran = {r["notebook"] for r in results}
    rows = [r for r in earlier if r.get("notebook") not in ran] + results
    return sorted(rows, key=lambda r: r["notebook"])


def describe_failure(error: Exception) -> dict:
    """Where and why a notebook failed: the cell (execution count, else index), the error."""
    count = getattr(error, "exec_count", None)
    index = getattr(error, "cell_index", None)
    cell = count if count is not None else (index if index is not None else "?")
    ename = getattr(error, "ename", type(error).__name__)
    evalue = getattr(error, "evalue", str(error))
    return {"cell": cell, "error": f"{ename}: {evalue}".strip()}


def program() -> str:
    """How this command was invoked (`.venv/bin/dfpt` under `make book`), for re-run hints."""
    exe = Path(sys.argv[0])
    if exe.name != "dfpt":
        return "dfpt"
    try:
        return str(exe.absolute().relative_to(Path.cwd()))
    except ValueError:
        return str(exe)


def summary(results: list[dict], last: dict[str, float], scale: str, index: Path) -> str:
    """The closing report: a table of times, each failure with its re-run command, the index."""
    width = max(len(Path(r["notebook"]).stem) for r in results)
    lines = ["", f"{'notebook':<{width}}  status  {'time':>12}  {'last run':>12}"]
    for r in results:
        before = clock(last[r["notebook"]]) if r["notebook"] in last else "-"
        name = Path(r["notebook"]).stem
        lines.append(f"{name:<{width}}  {r['status']:<6}  {clock(r['seconds']):>12}  {before:>12}")
    lines.append(f"{'total':<{width}}  {'':<6}  {clock(sum(r['seconds'] for r in results)):>12}")
    for r in results:
        if "failure" in r:
            stem = Path(r["notebook"]).stem
            f = r["failure"]
            lines += [
                f"FAILED {stem}, cell {f['cell']}: {f['error']}",
                f"  executed notebook: {r['output'] or 'not written'}",
                f"  re-run just this one: {program()} book --scale {scale} --only {stem[:2]}",
            ]
    lines.append(f"index: {index}")
    return "\n".join(lines)


def drop_injected_parameters(path: Path) -> None:
    """Remove a cell papermill injected on an earlier run (committed notebooks keep only
    their own parameters cell)."""
    import nbformat

    notebook = nbformat.read(path, as_version=4)
    cells = [c for c in notebook.cells if "injected-parameters" not in c.metadata.get("tags", [])]
    if len(cells) != len(notebook.cells):
        notebook.cells = cells
        nbformat.write(notebook, path)


def to_html(notebook: Path, run_dir: Path) -> Path:
    """The executed notebook rendered to HTML beside the run (plots included), for the index."""
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter().from_filename(str(notebook))
    path = run_dir / f"{notebook.stem}.html"
    path.write_text(body, encoding="utf-8")
    return path


def write_index(run_dir: Path, results: list[dict], scale: str) -> Path:
    """index.html: one row per notebook with its status, time, executed notebook and figures."""
    rows = []
    for r in results:
        figs = sorted(Path(r["out_dir"]).glob("*.html")) if Path(r["out_dir"]).is_dir() else []
        links = " ".join(
            f'<a href="{html.escape(os.path.relpath(f, run_dir))}">{f.name}</a>' for f in figs
        )
        name = html.escape(r["notebook"])
        if r["output"]:
            name = f'<a href="{html.escape(os.path.relpath(r["output"], run_dir))}">{name}</a>'
        rows.append(
            f"<tr><td>{name}</td>"
            f"<td>{html.escape(r['status'])}</td><td>{r['seconds']:.0f} s</td>"
            f"<td>{links}</td></tr>"
        )
    page = (
        f"<!doctype html><meta charset=utf-8><title>DFPT-KD book, {scale} scale</title>"
        f"<h1>DFPT-KD book &mdash; {scale} scale</h1><table border=1 cellpadding=4>"
        "<tr><th>notebook</th><th>status</th><th>time</th><th>figures</th></tr>"
        + "".join(rows)
        + "</table>"
    )
    path = run_dir / "index.html"
    path.write_text(page)
    return path
