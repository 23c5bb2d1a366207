"""Where the repository's folders are; DFPT_DATA_DIR / DFPT_RUNS_DIR override them."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
BOOK_DIR = REPO_ROOT / "book"


def data_dir() -> Path:
    """Datasets and teacher checkpoints: $DFPT_DATA_DIR, else the repository's data/."""
    return Path(os.environ.get("DFPT_DATA_DIR", REPO_ROOT / "data")).expanduser()


def runs_dir() -> Path:
    """Run records: $DFPT_RUNS_DIR, else the repository's runs/."""
    return Path(os.environ.get("DFPT_RUNS_DIR", REPO_ROOT / "runs")).expanduser()
