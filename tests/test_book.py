"""The book's notebooks follow the rules of shared/NOTEBOOKS.md: a tagged parameters cell whose
defaults are the smoke preset, the common parameters, the python3 kernel, committed outputs with
execution counts, regression cells, and presets that cover every notebook parameter."""

from __future__ import annotations

import ast

import nbformat
import papermill as pm
import pytest
import yaml

from dfpt_core.book import SCALES, list_notebooks, load_params, select

NOTEBOOKS = list_notebooks()
REQUIRED = ("scale", "out_dir", "live", "seed")


def test_the_book_has_its_chapters():
    stems = [nb.stem.split("_", 1)[0] for nb in NOTEBOOKS]
    assert stems == [f"{i:02d}" for i in range(10)]
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
    assert declared["scale"]["default"] == '"smoke"'


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_presets_cover_the_notebook_and_smoke_is_its_default(path):
    declared = pm.inspect_notebook(str(path))
    presets = {scale: load_params(scale) for scale in SCALES}
    for name, info in declared.items():
        if name in ("scale", "out_dir", "cache_dir", "live", "results_root", "cpu_study"):
            continue  # set by the runner (or a path with a working default)
        for scale, values in presets.items():
            assert name in values, f"{name} missing from book/params/{scale}.yaml"
        default = None if info["default"] == "None" else ast.literal_eval(info["default"])
        assert presets["smoke"][name] == default, f"{name}: smoke preset != notebook default"


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
