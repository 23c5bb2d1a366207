"""What every notebook of the book calls: one-line setup, parameter checks, "load if trained,
else train" runs, and the metrics.json each notebook leaves in its out_dir."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import plotly.io as pio
import torch
import yaml

from .config import TrainConfig, make_config
from .runtime import seed_everything
from .viz import RENDERER, is_live

SCALES = ("smoke", "cpu", "full")


def setup(seed: int = 0, live: bool = True, threads: int | None = None) -> bool:
    """Seed everything, ask for deterministic kernels, pin the plotly renderer (so HTML exports
    keep the plots) and quiet warnings that would flood headless logs. Returns whether the
    notebook runs live (interactive widgets and progress bars) or headless."""
    seed_everything(seed)
    pio.renderers.default = RENDERER
    if threads:
        torch.set_num_threads(threads)
    live = is_live(live)
    os.environ.setdefault("TQDM_MININTERVAL", "1" if live else "30")
    import warnings

    warnings.filterwarnings("ignore", message=".*deterministic.*")
    return live


def check_choice(name: str, value, allowed) -> None:
    """A notebook parameter must be one of `allowed`; the error names both."""
    allowed = list(allowed)
    if value not in allowed:
        raise ValueError(f"parameter {name}={value!r} is not allowed; choose one of {allowed}")


def check_positive(name: str, value) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"parameter {name}={value!r} must be a positive number")


@dataclass
class RunResult:
    """A finished (or loaded) run: its config, per-epoch history, best record and folder."""

    config: TrainConfig
    history: list[dict]
    best: dict
    run_dir: Path
    trainer: object | None = None  # the live Trainer when trained in this session

    @property
    def final(self) -> dict:
        return self.history[-1]

    def checkpoint(self) -> Path:
        """The best student weights, in the {"model": state_dict} format load_checkpoint reads."""
        return self.run_dir / "checkpoints" / "best.pt"


def config_key(values: dict) -> str:
    """A short hash of what determines a run's result, not of where anything is written. Only
    values that differ from TrainConfig's defaults count (a new config field leaves existing
    keys unchanged), and a checkpoint of another cached run counts by its run folder's name
    (which carries that run's own hash), however the cache path is spelled."""
    defaults = TrainConfig().to_dict()
    keep = {
        k: v
        for k, v in values.items()
        if k not in ("name", "out_dir", "progress") and v != defaults.get(k, object())
    }

    def portable(path):
        path = Path(str(path))
        return (
            f"{path.parent.parent.name}/{path.name}"
            if path.parent.name == "checkpoints"
            else str(path)
        )

    for key in ("teacher_checkpoint", "student_checkpoint"):
        if keep.get(key):
            keep[key] = portable(keep[key])
    for key in ("assistant_checkpoints", "anchor_checkpoints"):
        if keep.get(key):
            keep[key] = [portable(p) for p in keep[key]]
    return hashlib.sha256(json.dumps(keep, sort_keys=True, default=str).encode()).hexdigest()[:10]


def cached_run(
    name: str, cache_dir: str | os.PathLike, live: bool = False, callbacks=(), **values
) -> RunResult:
    """Load if trained, else train: the run `name` with config `values` lives in
    `<cache_dir>/<name>-<hash of values>/`. A finished run there, or shipped in the repository
    under that name (the `cpu`-scale teachers, `teachers.shipped_run`), is loaded (history, best);
    otherwise it is trained (resuming an interrupted attempt) with `callbacks` (Trainer
    callbacks: on_train_start / on_epoch_end / on_train_end) and its records written."""
    from .experiment import run

    cfg = make_config({**values, "name": name, "out_dir": str(cache_dir)})
    cfg.name = f"{name}-{config_key(cfg.to_dict())}"
    run_dir = Path(cache_dir) / cfg.name
    if not (run_dir / "metrics.json").is_file():
        from .teachers import shipped_run

        run_dir = shipped_run(cfg.name) or run_dir
    metrics = run_dir / "metrics.json"
    if metrics.is_file():
        record = json.loads(metrics.read_text())
        if record.get("epochs_completed") == cfg.epochs:
            return RunResult(cfg, load_history(run_dir), record["best"], run_dir)
    resume = (run_dir / "checkpoints" / "last.pt").is_file()
    trainer = run(cfg, resume=resume, live=live, callbacks=callbacks, progress=is_live(live))
    return RunResult(cfg, trainer.history, trainer.best, run_dir, trainer)


def load_history(run_dir: Path) -> list[dict]:
    """history.csv back into a list of records (numbers as floats/ints)."""
    import csv

    with open(Path(run_dir) / "history.csv") as f:
        return [
            {k: yaml.safe_load(v) if v != "" else None for k, v in row.items()}
            for row in csv.DictReader(f)
        ]


def write_metrics(out_dir: str | os.PathLike, metrics: dict, **extra) -> Path:
    """The notebook's results record: `<out_dir>/metrics.json`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "metrics.json"
    path.write_text(json.dumps({**extra, **metrics}, indent=2, default=str))
    return path


def common_args(
    dataset: str,
    in_chans: int,
    limit_train,
    limit_test,
    batch_size: int,
    lr: float,
    device: str,
    seed: int,
    live: bool,
    **extra,
) -> dict:
    """The training settings every run of a notebook shares (so runs hash, and cache, alike
    across notebooks): the book trains with a cosine schedule over each run's epochs, in
    channels_last memory format."""
    return dict(
        dataset=dataset,
        in_chans=in_chans,
        limit_train=limit_train,
        limit_test=limit_test,
        batch_size=batch_size,
        lr=lr,
        device=device,
        seed=seed,
        schedule="cosine",
        milestones=[],
        channels_last=True,  # 1.5-2.4x faster training steps on CPUs (bench/train_step.py)
        progress=is_live(live),
        **extra,
    )


def preset_common(params: dict) -> dict:
    """`common_args` from a scale's preset (book/params/<scale>.yaml, as `book.load_params`
    reads it): what a notebook run at that scale shares, for scripts that train as the book does."""
    keys = ("dataset", "in_chans", "limit_train", "limit_test", "batch_size", "lr", "device")
    return common_args(*(params[k] for k in keys), params["seed"], live=False)


@dataclass
class Teacher:
    """A pre-trained teacher: its architecture, checkpoint, and its training run if the book
    trained it (None for a published or user-supplied checkpoint). `metrics` are its test
    metrics (from the run's best epoch, or evaluated from the checkpoint)."""

    arch: str
    checkpoint: Path
    run: RunResult | None = None
    metrics: dict | None = None

    @property
    def trajectory(self) -> dict[int, Path]:
        """Checkpoints from along the teacher's own training, {epoch: path} (see
        `route_epochs`), for methods that distil from a teacher before it converged (ESKD's
        early-stopped teacher, RCO's route). Empty for a teacher the book did not train."""
        if self.run is None:
            return {}
        found = {
            k: self.run.run_dir / "checkpoints" / f"epoch{k}.pt"
            for k in self.run.config.keep_checkpoints
        }
        return {k: p for k, p in found.items() if p.is_file()}


def route_epochs(epochs: int) -> list[int]:
    """The epochs at a quarter, half and three quarters of a teacher's training."""
    return sorted({max(1, round(epochs * f)) for f in (0.25, 0.5, 0.75)} - {epochs})


def evaluate_checkpoint(arch: str, checkpoint, common: dict) -> dict:
    """Test metrics (keys "student_top1", "student_top5", "student_pt") of a checkpoint on the
    notebook's test set."""
    from .experiment import evaluate_checkpoint as evaluate

    return evaluate(
        arch,
        checkpoint,
        common["dataset"],
        common["in_chans"],
        common["limit_test"],
        device=common["device"],
        seed=common["seed"],
    )


def teacher(
    arch: str,
    cache_dir,
    common: dict,
    epochs: int,
    checkpoint: str | None = None,
    live: bool = False,
) -> Teacher:
    """A teacher to distil from: `checkpoint` ("published" or a path) if given, else trained
    with cross-entropy under `cache_dir` (loaded if already trained), keeping its checkpoints
    at `route_epochs(epochs)` (its `trajectory`)."""
    if checkpoint:
        from .teachers import resolve_checkpoint

        path = resolve_checkpoint(checkpoint, arch)
        return Teacher(arch, path, metrics=evaluate_checkpoint(arch, path, common))
    result = cached_run(
        f"{arch}-ce",
        cache_dir,
        live=live,
        method="ce",
        student=arch,
        epochs=epochs,
        keep_checkpoints=route_epochs(epochs),
        **common,
    )
    return Teacher(arch, result.checkpoint(), result, result.best)


def distil(
    method: str,
    teacher: Teacher,
    student: str,
    cache_dir,
    common: dict,
    epochs: int,
    live: bool = False,
    tag: str = "",
    **method_args,
) -> RunResult:
    """Train `student` from `teacher` with `method` (loaded if already trained)."""
    name = f"{student}-from-{teacher.arch}-{method}{'-' + tag if tag else ''}"
    return cached_run(
        name,
        cache_dir,
        live=live,
        method=method,
        student=student,
        teacher=teacher.arch,
        teacher_checkpoint=str(teacher.checkpoint),
        epochs=epochs,
        method_args=method_args,
        **common,
    )
