"""The package's outline: dependencies point down only (models/losses/data -> prompt ->
methods -> engine -> run -> workbook -> cli), the core imports nothing of the workbook layer
nor its packages (plotly, pandas, Jupyter), and it never looks for files inside the checkout."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import tiny_yaml

PACKAGE = Path(__file__).resolve().parents[1] / "dfpt_core"
RANK = {
    "dfpt_core": 0,
    "models": 1,
    "losses": 1,
    "data": 1,
    "prompt": 2,
    "methods": 3,
    "engine": 4,
    "run": 5,
    "workbook": 6,
    "cli": 7,
}
WORKBOOK_PACKAGES = ("plotly", "pandas", "IPython", "ipywidgets", "papermill", "nbformat")


def layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def imports(path: Path) -> list[tuple[str, int]]:
    """(absolute module, line) of every import in the file, except under `if TYPE_CHECKING:`."""
    tree = ast.parse(path.read_text())
    package = (
        module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    )
    skip = {
        id(n)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING"
        for child in node.body
        for n in ast.walk(child)
    }
    found = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")
            if node.level:
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module
            found.append((target, node.lineno))
            found += [(f"{target}.{a.name}", node.lineno) for a in node.names]
    return found


MODULES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_dependencies_point_down(path):
    source = layer(module_name(path))
    for target, line in imports(path):
        if target.startswith("dfpt_core.") and layer(target) in RANK:
            assert RANK[layer(target)] <= RANK[source], (
                f"{path.name}:{line} ({source}) imports {target} ({layer(target)}), a layer above"
            )
        if RANK[source] < RANK["workbook"]:
            assert target.split(".")[0] not in WORKBOOK_PACKAGES, (
                f"{path.name}:{line}: the core imports {target} (a workbook dependency)"
            )


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_the_core_never_looks_into_the_checkout(path):
    if RANK[layer(module_name(path))] >= RANK["workbook"]:
        return
    assert "__file__" not in path.read_text(), f"{path} locates files relative to the package"


def test_the_core_trains_without_the_workbook_packages(tmp_path, fmnist_root):
    """As in an install without the [book] extra: plotly, pandas and Jupyter cannot be imported,
    and `dfpt train` still trains (it only skips the curves figure)."""
    blocked = ", ".join(repr(p) for p in WORKBOOK_PACKAGES)
    config = tiny_yaml(
        tmp_path / "run.yaml",
        tmp_path / "runs",
        fmnist_root,
        epochs=1,
        limit_train=64,
        limit_test=32,
    )
    script = f"""
import sys
for name in ({blocked},):
    sys.modules[name] = None  # "not installed": importing it raises ImportError
from dfpt_core.cli import main
assert main(["train", "--config", {str(config)!r}]) == 0
assert main(["book", "--scale", "smoke"]) == 2
"""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # the suite's one thread (conftest.one_thread)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert "needs the workbook layer" in done.stderr and "pip install -e '.[book]'" in done.stderr
    assert (tmp_path / "runs" / "run" / "metrics.json").is_file()
    assert not (tmp_path / "runs" / "run" / "curves.html").exists()
