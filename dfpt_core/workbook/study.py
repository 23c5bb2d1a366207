"""What the study scripts (scripts/*_study.py) share: their setup in each process, and their
JSON record."""

from __future__ import annotations

import datetime
import functools
import json
from pathlib import Path

import torch

import dfpt_core

from ..methods.shared_outputs import share_in_this_process
from .book import load_params
from .cache import Teacher, teacher
from .checkout import runs_dir
from .setup import preset_common, setup


@functools.cache
def study_setup(scale: str, cache_name: str) -> tuple[dict, Teacher, Path]:
    """(the scale's preset, its teacher, the run cache runs/<cache_name>/), once per process
    (the study's process or a --jobs worker). Runs trained here share their teacher's outputs:
    runs of one seed see the same batches, and every run the same test set."""
    params = load_params(scale)
    setup(seed=params["seed"], live=False)
    share_in_this_process()
    cache = runs_dir() / cache_name
    found = teacher(params["teacher"], cache, preset_common(params), params["teacher_epochs"])
    return params, found, cache


def write_study(path: Path, record: dict) -> None:
    """Write a study's record as JSON, with the library and torch versions and the time."""
    record = {
        **record,
        "dfpt_core": dfpt_core.__version__,
        "torch": torch.__version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1) + "\n")
