"""Where the repository's folders are (data, runs, book), overridable by environment variables."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("DFPT_DATA_DIR", REPO_ROOT / "data"))
RUNS_DIR = Path(os.environ.get("DFPT_RUNS_DIR", REPO_ROOT / "runs"))
BOOK_DIR = REPO_ROOT / "book"
