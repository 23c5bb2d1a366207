"""Regenerate the runs the cpu book ships in data/runs/cpu/ and the committed cpu notebooks, in
one command (resumable: runs are cached in runs/book-cpu/cache-retrain/):

    python scripts/ship_cpu_runs.py --jobs 2

With `--reuse-shipped` the runs shipped already are copied into that cache first, so only the
runs not shipped yet train (a notebook's new grid, without retraining the rest of the book);
the students among them keep their shipped fp16 weights.

1. The cpu-scale teachers (book/params/cpu.yaml: `teacher` and `gap_teachers`) are trained
   `--jobs` at a time, shipped ones ignored (DFPT_IGNORE_SHIPPED=1).
2. The notebooks whose default scale is cpu run with papermill as `dfpt book --scale cpu
   --retrain --run-jobs <jobs>` does (their grids train `--jobs` runs at a time); every run
   they load is logged (DFPT_RUN_LOG).
3. Those runs ship: config.yaml, metrics.json, history.csv (and any record a notebook's probe
   wrote beside them) and the selected weights
   (checkpoints/best.pt; fp16 for students, fp32 for teachers, whose outputs every other run
   distils), plus the main teacher's trajectory (the checkpoints its training kept); every
   checkpoint xz-compressed (10-17 % smaller; `read_checkpoint` reads it, torch.load does not).
4. The manifest records for each run its architecture, method, selected epoch and test
   metrics, configuration, the sha256 of every file, the library and torch versions.
5. The committed cpu notebooks are re-executed in place from the shipped runs (`dfpt book
   --scale cpu --in-place`: a replay, nothing trains).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
from pathlib import Path

import torch

import dfpt_core
import dfpt_core.workbook as nb
from dfpt_core.models.checkpoint import read_checkpoint, save_checkpoint
from dfpt_core.run.config import load_config
from dfpt_core.workbook.book import default_scale, list_notebooks, load_params, run_book
from dfpt_core.workbook.cache import IGNORE_SHIPPED, RUN_LOG, sha256, shipped_manifest, shipped_run
from dfpt_core.workbook.checkout import SHIPPED_DIR, runs_dir
from dfpt_core.workbook.parallel import run_parallel

RECORDS = ("config.yaml", "metrics.json", "history.csv")
METRICS = ("student_top1", "student_top5", "student_pt", "epoch")


def train_teacher(arch: str, cache: Path) -> str:
    """One cpu teacher trained (or found) in `cache`, in a worker process: its run folder."""
    params = load_params("cpu")
    nb.setup(seed=params["seed"], live=False)
    found = nb.teacher(arch, cache, nb.preset_common(params), params["teacher_epochs"])
    return str(found.run.run_dir)


def pack(src: Path, dst: Path, fp16: bool) -> None:
    """A checkpoint xz-compressed (`save_checkpoint(compress=True)`, read back by the library's
    `read_checkpoint`); with `fp16`, its weights alone, floating-point tensors in fp16 (loading
    casts them back)."""
    ckpt = read_checkpoint(src)
    if fp16:
        ckpt = {
            "model": {k: v.half() if v.is_floating_point() else v for k, v in ckpt["model"].items()}
        }
    save_checkpoint(ckpt, dst, compress=True)


def ship(run_dir: Path, target: Path, teacher: bool, trajectory: bool) -> dict:
    """Copy one run into `target` and return its manifest entry."""
    out = target / run_dir.name
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    # the run's records and any a notebook's probe left beside them (e.g. 02's trajectory.csv)
    records = sorted(
        p.name for p in run_dir.iterdir() if p.is_file() and p.suffix in (".yaml", ".json", ".csv")
    )
    missing = set(RECORDS) - set(records)
    if missing:
        raise FileNotFoundError(f"{run_dir} lacks {sorted(missing)}: not a finished run")
    files = [*records, "checkpoints/best.pt"]
    for rel in records:
        shutil.copyfile(run_dir / rel, out / rel)
    pack(run_dir / "checkpoints/best.pt", out / "checkpoints/best.pt", fp16=not teacher)
    if trajectory:
        for path in sorted((run_dir / "checkpoints").glob("epoch*.pt")):
            pack(path, out / "checkpoints" / path.name, fp16=False)
            files.append(f"checkpoints/{path.name}")
    record = json.loads((run_dir / "metrics.json").read_text())
    config = load_config(run_dir / "config.yaml").to_dict()
    return {
        "role": "teacher" if teacher else "student",
        "arch": config["student"],
        "method": config["method"],
        **{f"test_{k.removeprefix('student_')}": record["best"][k] for k in METRICS[:3]},
        "selected_epoch": record["best"]["epoch"],
        "selection": record["selection"],
        "config": config,
        "files": {rel: sha256(out / rel) for rel in files},
    }


def reuse_shipped(source: Path, cache: Path) -> int:
    """Copy every run of `source`'s manifest into `cache` (where not there yet): the number
    copied. The manifest's checksums are verified (`shipped_run`)."""
    copied = 0
    for name in shipped_manifest(source).get("runs", {}):
        if not (cache / name / "metrics.json").is_file():
            shutil.copytree(shipped_run(name, source), cache / name, dirs_exist_ok=True)
            copied += 1
    return copied


def run_seconds(target: Path, name: str) -> float:
    """The training time a shipped run recorded."""
    return json.loads((target / name / "metrics.json").read_text())["seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1, help="runs trained at once")
    parser.add_argument("--target", default=SHIPPED_DIR, type=Path)
    parser.add_argument(
        "--teachers-only", action="store_true", help="steps 1, 3 and 4 for the teachers alone"
    )
    parser.add_argument(
        "--reuse-shipped",
        action="store_true",
        help="copy the shipped runs into the cache first: only runs not shipped yet train",
    )
    args = parser.parse_args()
    params = load_params("cpu")
    cache = runs_dir() / "book-cpu" / "cache-retrain"
    if args.reuse_shipped:
        print(f"reused {reuse_shipped(args.target, cache)} shipped runs in {cache}", flush=True)
    os.environ[IGNORE_SHIPPED] = "1"  # inherited by the workers and the notebooks' kernels
    teachers = list(dict.fromkeys([params["teacher"], *params["gap_teachers"]]))
    tasks = [(arch, cache) for arch in reversed(teachers)]  # the deepest first
    teacher_dirs = {}
    for (arch, _), result in run_parallel(train_teacher, tasks, args.jobs):
        if isinstance(result, BaseException):
            raise RuntimeError(f"teacher {arch} failed") from result
        teacher_dirs[arch] = Path(result)
        print(f"teacher {arch}: {result}", flush=True)
    notebooks = [p.stem for p in list_notebooks() if default_scale(p) == "cpu"]
    used = {}
    if not args.teachers_only:
        log = runs_dir() / "book-cpu" / "shipped-runs.log"
        log.unlink(missing_ok=True)
        os.environ[RUN_LOG] = str(log)
        run_book("cpu", only=notebooks, retrain=True, run_jobs=args.jobs)
        used = dict.fromkeys(Path(line) for line in log.read_text().split())
        del os.environ[RUN_LOG]
    del os.environ[IGNORE_SHIPPED]

    if args.target.exists():
        shutil.rmtree(args.target)
    main_teacher = teacher_dirs[params["teacher"]]
    runs = {}
    for run_dir in dict.fromkeys([*teacher_dirs.values(), *used]):
        is_teacher = run_dir in teacher_dirs.values()
        runs[run_dir.name] = ship(run_dir, args.target, is_teacher, run_dir == main_teacher)
    manifest = {
        "about": "the runs behind the cpu book, trained by scripts/ship_cpu_runs.py",
        "params": "book/params/cpu.yaml over the cpu recipe",
        "notebooks": notebooks,
        "regenerate": "python scripts/ship_cpu_runs.py --jobs 2",
        "dfpt_core": dfpt_core.__version__,
        "torch": torch.__version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        # the shipped runs' own training times added up (their metrics.json `seconds`, each run
        # on its worker's threads): the work a regeneration from nothing redoes
        "run_hours": round(sum(run_seconds(args.target, name) for name in runs) / 3600, 2),
        "runs": runs,
    }
    (args.target / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    size = sum(p.stat().st_size for p in args.target.rglob("*") if p.is_file())
    print(f"shipped {len(runs)} runs into {args.target} ({size / 2**20:.1f} MiB)", flush=True)
    if not args.teachers_only:
        run_book("cpu", only=notebooks, in_place=True)


if __name__ == "__main__":
    main()
