"""Collect finished runs (their metrics.json records) into one table."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from ..run.recipes import SCALES


def collect_runs(root: str | Path) -> pd.DataFrame:
    """One row per training run under `root` (any depth): every `metrics.json` written by the
    Trainer (it has "method" and "best"), with the scale inferred from the path
    (book-<scale>/..., or the runs/<scale>/ folders of `dfpt train --scale <scale>`)."""
    rows = []
    for path in sorted(Path(root).rglob("metrics.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if not isinstance(record, dict) or "method" not in record or "best" not in record:
            continue
        best, final = record.get("best") or {}, record.get("final") or {}
        rows.append(
            {
                "scale": infer_scale(path),
                "run": record.get("name", path.parent.name),
                "method": record["method"],
                "teacher": record.get("teacher"),
                "student": record["student"],
                "dataset": record.get("dataset"),
                "epochs": record.get("epochs_completed"),
                "best_top1": best.get("student_top1"),
                "final_top1": final.get("student_top1"),
                "teacher_top1": final.get("teacher_top1"),
                "prompt_top1": final.get("prompt_top1"),
                "gap": final.get("gap"),
                "seconds": record.get("seconds"),
                "path": str(path.parent),
            }
        )
    columns = [
        "scale",
        "run",
        "method",
        "teacher",
        "student",
        "dataset",
        "epochs",
        "best_top1",
        "final_top1",
        "teacher_top1",
        "prompt_top1",
        "gap",
        "seconds",
        "path",
    ]
    return pd.DataFrame(rows, columns=columns)


def infer_scale(path: Path) -> str:
    for part in path.parts:
        if part.startswith("book-"):
            return part.removeprefix("book-")
        if part in SCALES:
            return part
    return "other"
