"""Train the book's `cpu`-scale teachers and ship them in data/teachers/cpu/ with a manifest.

The teachers are trained exactly as the notebooks would train them at `cpu` scale (the same
preset, `load_params("cpu")`: the cpu recipe overlaid with book/params/cpu.yaml; the same
`nb.common_args` and `nb.teacher` call), so each shipped run folder carries the name the
notebooks' run cache looks for, and `nb.cached_run` loads it
instead of training ("load if trained"). Shipped per run: config.yaml, metrics.json,
history.csv and the best weights; for the book's main teacher also the checkpoints kept along
its training (its trajectory, for ESKD and RCO). The manifest records for every run its
architecture, test metrics (the book's test subset and the full test set), training config,
library and torch versions, and the sha256 of every shipped file.

    python scripts/ship_cpu_teachers.py            # trains what is missing (about 5 min)
"""

from __future__ import annotations

import argparse
import datetime
import json
import shutil
from pathlib import Path

import torch

import dfpt_core
import dfpt_core.workbook as nb
from dfpt_core.workbook.book import load_params
from dfpt_core.workbook.cache import sha256
from dfpt_core.workbook.checkout import SHIPPED_DIR, runs_dir

RECORDS = ("config.yaml", "metrics.json", "history.csv")


def ship(teacher: nb.Teacher, with_trajectory: bool, common: dict, target: Path) -> dict:
    """Copy one teacher run into `target` and return its manifest entry."""
    run_dir = teacher.run.run_dir
    files = [*RECORDS, "checkpoints/best.pt"]
    if with_trajectory:
        files += [f"checkpoints/{p.name}" for p in teacher.trajectory.values()]
    out = target / run_dir.name
    for rel in files:
        if run_dir != out:  # else: shipped already, and loaded from there
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(run_dir / rel, out / rel)
    full_test = nb.evaluate_checkpoint(
        teacher.arch, out / "checkpoints/best.pt", {**common, "limit_test": None}
    )
    return {
        "arch": teacher.arch,
        "test_top1": teacher.metrics["student_top1"],
        "test_top5": teacher.metrics["student_top5"],
        "test_pt": teacher.metrics["student_pt"],
        "test_examples": common["limit_test"],
        "full_test_top1": full_test["student_top1"],
        "config": teacher.run.config.to_dict(),
        "files": {rel: sha256(out / rel) for rel in files},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", default="cpu", choices=nb.SCALES, help="the book's preset")
    parser.add_argument("--target", default=SHIPPED_DIR, type=Path)
    args = parser.parse_args()
    params = load_params(args.scale)
    nb.setup(seed=params["seed"], live=False)
    common = nb.preset_common(params)
    staging = runs_dir() / "ship-cpu-teachers"
    runs = {}
    for arch in dict.fromkeys([params["teacher"], *params["gap_teachers"]]):
        teacher = nb.teacher(arch, staging, common, params["teacher_epochs"])
        entry = ship(teacher, arch == params["teacher"], common, args.target)
        runs[teacher.run.run_dir.name] = entry
        print(
            f"{teacher.run.run_dir.name}: test top-1 {entry['test_top1']:.2f} % "
            f"({entry['test_examples']} examples), {entry['full_test_top1']:.2f} % (all)"
        )
    manifest = {
        "about": "cpu-scale teachers of the book, trained by scripts/ship_cpu_teachers.py",
        "params": f"book/params/{args.scale}.yaml over the {args.scale} recipe",
        "dfpt_core": dfpt_core.__version__,
        "torch": torch.__version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "runs": runs,
    }
    (args.target / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    size = sum(p.stat().st_size for p in args.target.rglob("*") if p.is_file())
    print(f"shipped {len(runs)} teachers into {args.target} ({size / 2**20:.1f} MiB)")


if __name__ == "__main__":
    main()
