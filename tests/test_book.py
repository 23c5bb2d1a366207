"""The book's notebooks follow the rules of shared/NOTEBOOKS.md: a tagged parameters cell whose
defaults are the preset of the notebook's scale (cpu: the reader's book; smoke: not moved to it
yet), the common parameters, the python3 kernel, committed outputs with
execution counts, regression cells, and presets that cover every notebook parameter."""

from __future__ import annotations

import ast
import json
import os
import re

import nbformat
import papermill as pm
import pytest
import yaml

from dfpt_core.run.config import TrainConfig
from dfpt_core.run.recipes import recipe
from dfpt_core.workbook.book import (
    FROM_RECIPE,
    SCALES,
    default_scale,
    list_notebooks,
    load_params,
    run_book,
    select,
)
from dfpt_core.workbook.checkout import BOOK_DIR
from dfpt_core.workbook.setup import preset_common

NOTEBOOKS = list_notebooks()
REQUIRED = ("scale", "out_dir", "live", "seed")


def test_the_book_has_its_chapters():
    stems = [nb.stem.split("_", 1)[0] for nb in NOTEBOOKS]
    assert stems == [f"{i:02d}" for i in range(11)]
    assert [nb.stem for nb in select(NOTEBOOKS, ["05"])] == ["05_dfpt_training"]
    with pytest.raises(ValueError, match="matches no notebook"):
        select(NOTEBOOKS, ["42"])


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_structure(path):
    notebook = nbformat.read(path, as_version=4)
    assert notebook.metadata["kernelspec"]["name"] == "python3"
    tagged = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, "exactly one cell tagged `parameters`"
    assert not [c for c in notebook.cells if "injected-parameters" in c.metadata.get("tags", [])], (
        "papermill residue"
    )
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert all(c.execution_count for c in code), "commit the executed smoke run (counts kept)"
    assert not [o for c in code for o in c.outputs if o.output_type == "error"]
    checks = [c for c in code if c.source.startswith("# NBVAL_CHECK_OUTPUT")]
    assert len(checks) >= 2 and all(c.outputs for c in checks)
    declared = pm.inspect_notebook(str(path))
    assert set(REQUIRED) <= set(declared)
    assert default_scale(path) in ("cpu", "smoke")  # the reader's book, or not yet moved to it


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_presets_cover_the_notebook_and_its_default_scale_is_its_defaults(path):
    declared = pm.inspect_notebook(str(path))
    presets = {scale: load_params(scale) for scale in SCALES}
    own = default_scale(path)
    for name, info in declared.items():
        if name in ("scale", "out_dir", "cache_dir", "live", "results_root", "cpu_study"):
            continue  # set by the runner (or a path with a working default)
        for scale, values in presets.items():
            assert name in values, f"{name} missing from book/params/{scale}.yaml"
        default = None if info["default"] == "None" else ast.literal_eval(info["default"])
        assert presets[own][name] == default, f"{name}: {own} preset != notebook default"


def test_presets_parse_and_differ_where_they_should():
    smoke, cpu, full = (load_params(s) for s in SCALES)
    assert smoke["dataset"] == cpu["dataset"] == "fashion_mnist"
    assert full["dataset"] == "cifar100" and full["teacher_checkpoint"] == "published"
    assert full["student_epochs"] == 240 and full["lr"] == 0.05 and full["batch_size"] == 64
    assert cpu["limit_train"] > smoke["limit_train"]
    with pytest.raises(ValueError, match="scale must be one of"):
        load_params("huge")
    for scale in SCALES:
        assert yaml.safe_load(yaml.safe_dump(load_params(scale))) == load_params(scale)


def test_presets_take_the_training_settings_from_the_recipes():
    """The presets' training settings are their scale's recipe (dfpt_core/run/recipes.py), not
    restated in book/params/; the notebooks' own parameters come from there."""
    for scale in SCALES:
        params = load_params(scale)
        values = {**TrainConfig().to_dict(), **recipe(scale)}
        for name, key in FROM_RECIPE.items():
            assert params[name] == values[key], (scale, name)
            assert type(params[name]) is type(values[key]), (scale, name)
        own = yaml.safe_load((BOOK_DIR / "params" / f"{scale}.yaml").read_text())
        restated = set(own) & {*FROM_RECIPE, "teacher_checkpoint"}
        assert not restated, f"book/params/{scale}.yaml restates the recipe: {sorted(restated)}"
    smoke, cpu, full = (load_params(s) for s in SCALES)
    assert (cpu["limit_train"], cpu["limit_test"], cpu["device"]) == (5000, None, "auto")
    assert (cpu["val_size"], cpu["amp"]) == (2000, "auto")
    assert (smoke["val_size"], smoke["amp"]) == (500, "none")
    assert (cpu["teacher_epochs"], cpu["student_epochs"], cpu["in_chans"]) == (15, 4, 1)
    assert (smoke["limit_train"], smoke["limit_test"], smoke["device"]) == (1000, 500, "cpu")
    assert (smoke["teacher_epochs"], smoke["student_epochs"]) == (2, 2)
    assert full["teacher_epochs"] == 240 and full["limit_train"] is None
    assert cpu["teacher_checkpoint"] is None and smoke["teacher_checkpoint"] is None
    # every run of the book trains with the book recipe's schedule and memory format
    for scale in SCALES:
        common = preset_common(load_params(scale))
        for key in ("schedule", "milestones", "channels_last"):
            assert common[key] == recipe("cpu")[key], (scale, key)


def test_published_figures_are_the_recipes_table():
    """The book's published CIFAR-100 figures are the recipes' table of pairs (one statement)."""
    from dfpt_core.run import recipes
    from dfpt_core.workbook import published

    assert published.DFPT_CIFAR100 is recipes.DFPT_CIFAR100
    assert published.DFPT_COLUMNS is recipes.DFPT_COLUMNS
    assert published.DKD_CIFAR100 is recipes.DKD_CIFAR100
    assert published.DKD_CIFAR100[("wrn_40_2", "ShuffleV1")] == (74.83, 76.70)
    assert list(published.DKD_CIFAR100)[:2] == [("resnet56", "resnet20"), ("resnet110", "resnet32")]


def _notebook(path, source, parameters='scale = "smoke"\nout_dir = "."\nseed = 0'):
    """A two-cell notebook: a `parameters` cell and `source`."""
    kernelspec = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": kernelspec})
    params = nbformat.v4.new_code_cell(parameters)
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(source)]
    nbformat.write(nb, path)


def test_run_book_reports_progress_failures_and_estimates(tmp_path, capfd):
    book = tmp_path / "book"
    (book / "params").mkdir(parents=True)
    (book / "params" / "smoke.yaml").write_text("seed: 3\n")
    _notebook(book / "00_fine.ipynb", "assert seed == 3")
    _notebook(book / "01_broken.ipynb", "raise ValueError('broken on purpose')")
    runs = tmp_path / "runs"
    lines = []
    with pytest.raises(RuntimeError, match="1 of 2 notebooks failed"):
        run_book("smoke", out_root=runs, book_dir=book, echo=lines.append)
    text = "\n".join(lines)
    assert lines[1] == "[1/2] 00_fine: started" and lines[2].startswith("[1/2] 00_fine: ok in ")
    assert re.search(r"\[2/2\] 01_broken: FAILED in cell \d+ in \d+ s \(elapsed", text)
    assert "ValueError: broken on purpose" in text
    assert "re-run just this one: dfpt book --scale smoke --only 01" in text
    assert text.endswith(f"index: {runs / 'book-smoke' / 'index.html'}")
    assert (runs / "book-smoke" / "index.html").is_file()
    assert "without encryption" not in capfd.readouterr().err  # kernels log errors only
    # the next run knows the last one's times: the start line and the estimate of what is left
    _notebook(book / "01_broken.ipynb", "pass")
    lines.clear()
    run_book("smoke", out_root=runs, book_dir=book, echo=lines.append)
    assert re.fullmatch(r"\[1/2\] 00_fine: started \(last run \d+ s\)", lines[1])
    assert re.search(r"ok in \d+ s \(elapsed \d+ s\)$", lines[2])  # 01 has no time yet
    lines.clear()
    run_book("smoke", out_root=runs, book_dir=book, echo=lines.append)
    assert re.search(r"\(elapsed \d+ s; about \d+ s left by the last run's times\)$", lines[2])
    record = json.loads((runs / "book-smoke" / "book_run.json").read_text())
    assert [r["status"] for r in record["runs"]] == ["ok", "ok"]


def test_run_book_in_parallel_shares_out_devices_and_runs_the_collector_last(tmp_path):
    book = tmp_path / "book"
    (book / "params").mkdir(parents=True)
    (book / "params" / "smoke.yaml").write_text("seed: 3\n")
    record = (
        "import json, os, time\nfrom pathlib import Path\nstart = time.time()\n{work}\n"
        "Path(out_dir).mkdir(parents=True, exist_ok=True)\n"
        "(Path(out_dir) / 'env.json').write_text(json.dumps({{'start': start, 'end': time.time(),"
        " 'device': os.environ.get('CUDA_VISIBLE_DEVICES')}}))"
    )
    for name in ("00_a", "01_b", "02_c"):
        _notebook(book / f"{name}.ipynb", record.format(work="time.sleep(3)"))
    _notebook(
        book / "03_results.ipynb",
        record.format(work="pass"),
        'out_dir = "."\nresults_root = "."',  # declares results_root: collects, runs last
    )
    runs, lines = tmp_path / "runs", []
    run_book("smoke", out_root=runs, book_dir=book, echo=lines.append, jobs=2, devices=["5", "7"])
    assert lines[0].endswith("on 2 workers, devices 5, 7")
    env = {n: json.loads((runs / "book-smoke" / n / "env.json").read_text()) for n in
           ("00_a", "01_b", "02_c", "03_results")}  # fmt: skip
    assert {e["device"] for e in env.values()} <= {"5", "7"}
    first = sorted((env[n] for n in ("00_a", "01_b", "02_c")), key=lambda e: e["start"])
    assert first[1]["start"] < first[0]["end"]  # two ran at once
    assert env["03_results"]["start"] > max(e["end"] for e in first)
    record = json.loads((runs / "book-smoke" / "book_run.json").read_text())
    assert [r["status"] for r in record["runs"]] == ["ok"] * 4
    with pytest.raises(ValueError, match="jobs must be >= 1"):
        run_book("smoke", out_root=runs, book_dir=book, jobs=0)


def test_run_book_retrains_apart_and_regenerates_in_place_only_its_scale(tmp_path):
    book = tmp_path / "book"
    (book / "params").mkdir(parents=True)
    for scale in ("cpu", "full"):
        (book / "params" / f"{scale}.yaml").write_text("seed: 3\njobs: 1\n")
    record = (
        "import json, os\nfrom pathlib import Path\n"
        "Path(out_dir).mkdir(parents=True, exist_ok=True)\n"
        "seen = {'cache_dir': cache_dir, 'jobs': jobs}\n"
        "seen['ignore'] = os.getenv('DFPT_IGNORE_SHIPPED')\n"
        "(Path(out_dir) / 'seen.json').write_text(json.dumps(seen))"
    )
    defaults = 'scale = "{}"\nout_dir = "out"\ncache_dir = "c"\nseed = 0\njobs = 1'
    _notebook(book / "00_cpu.ipynb", record, defaults.format("cpu"))
    _notebook(book / "01_smoke.ipynb", record, defaults.format("smoke"))
    runs = tmp_path / "runs"
    run_book("cpu", out_root=runs, book_dir=book, echo=print, retrain=True, run_jobs=2)
    seen = json.loads((runs / "book-cpu" / "00_cpu" / "seen.json").read_text())
    assert seen == {"cache_dir": str(runs / "book-cpu" / "cache-retrain"), "jobs": 2, "ignore": "1"}
    os.environ.pop("DFPT_IGNORE_SHIPPED")
    lines = []
    run_book("cpu", out_root=runs, book_dir=book, echo=lines.append, in_place=True)
    assert lines[0].startswith("dfpt book: 1 notebooks at cpu scale")  # 01 defaults to smoke
    executed = nbformat.read(book / "00_cpu.ipynb", as_version=4)
    assert all(c.execution_count for c in executed.cells if c.cell_type == "code")
    assert (book / "out" / "seen.json").is_file()  # its own defaults: nothing injected
    with pytest.raises(ValueError, match="no chosen notebook defaults to scale 'full'"):
        run_book("full", out_root=runs, book_dir=book, in_place=True, only=["00"])
    with pytest.raises(ValueError, match="retrain without it"):
        run_book("cpu", out_root=runs, book_dir=book, in_place=True, retrain=True)
