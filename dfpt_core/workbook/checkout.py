"""Where the checkout's folders are. The workbook belongs to the checkout (the book, its data,
its runs); the core library never looks here. DFPT_DATA_DIR / DFPT_RUNS_DIR override them."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
BOOK_DIR = REPO_ROOT / "book"
DATA_DIR = REPO_ROOT / "data"
#: the runs behind the cpu book (teachers and students), shipped with the repository with a
#: manifest (scripts/ship_cpu_runs.py)
SHIPPED_DIR = DATA_DIR / "runs" / "cpu"


def runs_dir() -> Path:
    """Run records: $DFPT_RUNS_DIR, else the checkout's runs/."""
    return Path(os.environ.get("DFPT_RUNS_DIR", REPO_ROOT / "runs")).expanduser()
