"""Run the book's notebooks headless with papermill at a scale, and index the results."""

from __future__ import annotations

import html
import json
import os
import time
from pathlib import Path

import yaml

from .paths import BOOK_DIR, runs_dir

SCALES = ("smoke", "cpu", "full")


def list_notebooks(book_dir: Path = BOOK_DIR) -> list[Path]:
    """The numbered notebooks `NN_name.ipynb`, in order."""
    return sorted(p for p in book_dir.glob("[0-9][0-9]_*.ipynb"))


def load_params(scale: str, book_dir: Path = BOOK_DIR) -> dict:
    """Parameters of a scale preset (book/params/<scale>.yaml)."""
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")
    with open(book_dir / "params" / f"{scale}.yaml") as f:
        return yaml.safe_load(f) or {}


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
) -> Path:
    """Execute the notebooks with papermill into runs/book-<scale>/ and write index.html.

    Each notebook gets those of the scale's parameters it declares, plus `scale`, `out_dir`
    (its own results folder), `cache_dir` (runs shared across notebooks) and `live=False`.
    With `in_place` (smoke only), the executed notebooks replace the committed ones with their
    own defaults (the smoke values; nothing injected), which is what nbval compares against.
    Kernels run with DFPT_HEADLESS=1. Raises RuntimeError listing the notebooks that failed,
    after running all of them.
    """
    import papermill as pm  # heavy import, only needed here

    if in_place and scale != "smoke":
        raise ValueError("--in-place regenerates the committed smoke outputs: use --scale smoke")
    os.environ["DFPT_HEADLESS"] = "1"  # inherited by the kernels papermill starts
    params = load_params(scale, book_dir)
    run_dir = Path(out_root or runs_dir()).resolve() / f"book-{scale}"
    run_dir.mkdir(parents=True, exist_ok=True)
    results, failures = [], []
    for nb in select(list_notebooks(book_dir), only):
        out_dir = run_dir / nb.stem
        declared = pm.inspect_notebook(str(nb))  # pass only what the notebook declares
        given = {
            **params,
            "scale": scale,
            "out_dir": str(out_dir),
            "live": False,
            "cache_dir": str(run_dir / "cache"),
        }
        target = nb if in_place else run_dir / nb.name
        if in_place:
            drop_injected_parameters(nb)
        start = time.time()
        try:
            pm.execute_notebook(
                str(nb),
                str(target),
                kernel_name="python3",
                cwd=str(book_dir),
                parameters={} if in_place else {k: v for k, v in given.items() if k in declared},
                log_output=True,
                progress_bar=False,
            )
            status = "ok"
        except Exception as e:  # papermill raises PapermillExecutionError with the cell error
            status = f"failed: {type(e).__name__}"
            ename, evalue = getattr(e, "ename", type(e).__name__), getattr(e, "evalue", str(e))
            failures.append(f"{nb.name}: {ename}: {evalue}")
        results.append(
            {
                "notebook": nb.name,
                "status": status,
                "seconds": time.time() - start,
                "output": str(to_html(target, run_dir)),
                "out_dir": str(out_dir),
            }
        )
    (run_dir / "book_run.json").write_text(json.dumps({"scale": scale, "runs": results}, indent=2))
    write_index(run_dir, results, scale)
    if failures:
        raise RuntimeError("notebooks failed:\n  " + "\n  ".join(failures))
    return run_dir


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
        nb_link = html.escape(os.path.relpath(r["output"], run_dir))
        rows.append(
            f'<tr><td><a href="{nb_link}">{html.escape(r["notebook"])}</a></td>'
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
