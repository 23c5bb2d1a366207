"""The workbook layer (the `[book]` extra): what the book's notebooks and scripts call on top of
the core library. `import dfpt_core.workbook as nb` gives the notebook API:

- setup: `setup`, `check_choice`, `check_positive`, `common_args`, `preset_common`,
  `write_metrics` (workbook/setup.py);
- the run cache, "load if trained, else train": `cached_run`, `teacher`, `distil`, `Teacher`,
  `RunResult`, `config_key`, `route_epochs`, `evaluate_checkpoint` (workbook/cache.py);
- a lesson's grid of runs, trained in parallel where missing: `Run`, `distil_run`, `run_grid`
  (workbook/grid.py);
- figures and the live dashboard (workbook/viz.py), the published figures
  (workbook/published.py), results collection (workbook/results.py), the papermill book
  runner (workbook/book.py).

Importing it points the core's data folder at the checkout's data/ (unless DFPT_DATA_DIR is
set), so notebooks, whatever their working directory, read the same datasets.
"""

import os

from ..run.recipes import SCALES
from .cache import (
    RunResult,
    Teacher,
    cached_run,
    config_key,
    distil,
    evaluate_checkpoint,
    load_history,
    route_epochs,
    teacher,
)
from .checkout import DATA_DIR
from .grid import Run, distil_run, run_grid
from .setup import check_choice, check_positive, common_args, preset_common, setup, write_metrics

os.environ.setdefault("DFPT_DATA_DIR", str(DATA_DIR))

__all__ = [
    "SCALES",
    "Run",
    "RunResult",
    "Teacher",
    "cached_run",
    "check_choice",
    "check_positive",
    "common_args",
    "config_key",
    "distil",
    "distil_run",
    "evaluate_checkpoint",
    "load_history",
    "preset_common",
    "route_epochs",
    "run_grid",
    "setup",
    "teacher",
    "write_metrics",
]
