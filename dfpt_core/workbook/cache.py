"""The book's run cache, "load if trained, else train": a run lives in
`<cache_dir>/<name>-<hash of the configuration that determines its result>/`; a finished one
there, or shipped in the checkout (the runs of the cpu book in data/runs/cpu/, verified
against their manifest), is loaded instead of trained. Teachers and distillation runs of the
notebooks go through it."""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..engine.records import RunInUseError, wait_for_run
from ..methods import resolved_hparams
from ..run.config import TrainConfig, make_config
from .checkout import SHIPPED_DIR
from .viz import Dashboard, is_live


@dataclass
class RunResult:
    """A finished (or loaded) run: its config, per-epoch history, the record of its selected
    epoch (`best`: highest validation top-1, or the last epoch) and folder."""

    config: TrainConfig
    history: list[dict]
    best: dict
    run_dir: Path
    trainer: object | None = None  # the live Trainer when trained in this session

    @property
    def final(self) -> dict:
        return self.history[-1]

    def checkpoint(self) -> Path:
        """The selected epoch's student weights, in the {"model": state_dict} format
        load_checkpoint reads."""
        return self.run_dir / "checkpoints" / "best.pt"


def config_key(values: dict) -> str:
    """A short hash of what determines a run's result, not of where anything is written nor of
    `cpu_malloc` (which changes speed only). Only values that differ from TrainConfig's defaults
    count (a new config field leaves existing keys unchanged), and a checkpoint of another
    cached run counts by its run folder's name (which carries that run's own hash), however the
    cache path is spelled."""
    defaults = TrainConfig().to_dict()
    keep = {
        k: v
        for k, v in values.items()
        if k not in ("name", "out_dir", "progress", "cpu_malloc") and v != defaults.get(k, object())
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
    if keep.get("networks"):  # {role: [{arch, checkpoint, args}, ...]}
        keep["networks"] = {
            role: [
                {**spec, "checkpoint": portable(spec["checkpoint"])}
                if isinstance(spec, dict) and spec.get("checkpoint")
                else spec
                for spec in specs
            ]
            for role, specs in keep["networks"].items()
        }
    return hashlib.sha256(json.dumps(keep, sort_keys=True, default=str).encode()).hexdigest()[:10]


def cached_run(
    name: str, cache_dir: str | os.PathLike, live: bool = False, callbacks=(), **values
) -> RunResult:
    """Load if trained, else train: the run `name` with config `values` lives in
    `<cache_dir>/<name>-<hash of values>/`. A finished run there, or shipped in the repository
    under that name (the `cpu`-scale teachers, `shipped_run`), is loaded (history, best);
    otherwise it is trained (resuming an interrupted attempt) with `callbacks` (Trainer
    callbacks: on_train_start / on_step_end / on_epoch_end / on_train_end) and its records
    written. While another process trains it (parallel notebooks or jobs), this one waits for
    that run and loads it: each run is trained once."""
    from ..run.build import run

    cfg = run_config(name, cache_dir, values)
    run_dir = Path(cache_dir) / cfg.name
    while True:  # until this process has the run, loaded or trained
        finished = find_finished(cfg, cache_dir)
        if finished is not None:
            return _logged(finished)
        if os.environ.get(REPLAY_ONLY, "") not in ("", "0"):
            raise MissingRunError(
                f"{cfg.name} ({cfg.method}, {cfg.student}) is neither in {cache_dir} nor shipped "
                f"in {SHIPPED_DIR} and {REPLAY_ONLY}=1 forbids training it: regenerate the "
                f"shipped runs with `{REGENERATE}`"
            )
        record = _read_json(run_dir / "metrics.json")
        resume = (run_dir / "checkpoints" / "last.pt").is_file() and not (
            record and stale_reason(record, cfg)
        )
        dashboard = Dashboard(live=live, title=f"{cfg.name}: {cfg.method}", display=live)
        try:
            trainer = run(
                cfg,
                resume=resume,
                overwrite=not resume,  # records without a checkpoint (e.g. damaged) start again
                callbacks=[dashboard, *callbacks],
                progress=is_live(live),
            )
        except RunInUseError:  # another process (a parallel notebook or job) trains it: wait
            print(f"{cfg.name}: trained by another process; waiting for it", flush=True)
            wait_for_run(run_dir)
            continue
        return _logged(RunResult(cfg, trainer.history, trainer.best, run_dir, trainer))


def _logged(result: RunResult) -> RunResult:
    """`result`, its folder appended to the file named by $DFPT_RUN_LOG when set (the runs a
    notebook used: what scripts/ship_cpu_runs.py ships)."""
    log = os.environ.get(RUN_LOG)
    if log:
        with open(log, "a") as f:
            f.write(f"{result.run_dir.resolve()}\n")
    return result


#: Set to 1 (CI's replay of the cpu book) to make `cached_run` fail instead of training.
REPLAY_ONLY = "DFPT_REPLAY_ONLY"
#: Set to 1 (`dfpt book --retrain`) to train every run instead of loading the shipped ones.
IGNORE_SHIPPED = "DFPT_IGNORE_SHIPPED"
#: A file that, when set, gets one line per run `cached_run` returns: the run's folder.
RUN_LOG = "DFPT_RUN_LOG"
#: The one command that regenerates every shipped run.
REGENERATE = "python scripts/ship_cpu_runs.py --jobs 2"


class MissingRunError(RuntimeError):
    """A run that replay-only mode (`REPLAY_ONLY`) would have had to train."""


def run_config(name: str, cache_dir, values: dict) -> TrainConfig:
    """The validated config of cached run `name`, named `<name>-<config_key>` as its folder."""
    cfg = make_config({**values, "name": name, "out_dir": str(cache_dir)})
    cfg.name = f"{name}-{config_key(cfg.to_dict())}"
    return cfg


def find_finished(cfg: TrainConfig, cache_dir) -> RunResult | None:
    """The finished run of `cfg` (from `run_config`) in `cache_dir`, else shipped, else None."""
    run_dir = Path(cache_dir) / cfg.name
    shipped = None if (run_dir / "metrics.json").is_file() else shipped_run(cfg.name)
    return load_finished(cfg, shipped or run_dir, shipped=shipped is not None)


def load_finished(cfg: TrainConfig, run_dir: Path, shipped: bool = False) -> RunResult | None:
    """The finished run in `run_dir` (all of cfg.epochs done), or None. A damaged record
    (unreadable metrics.json or history.csv) counts as missing, with a warning saying so, and so
    does a stale one (`stale_reason`); the shipped teachers' records are kept as they are."""
    if not (run_dir / "metrics.json").is_file():
        return None
    try:
        record = json.loads((run_dir / "metrics.json").read_text())
        if record["epochs_completed"] != cfg.epochs:
            return None
        reason = None if shipped else stale_reason(record, cfg)
        if reason:
            warnings.warn(f"{run_dir}: {reason}; the run trains again", stacklevel=3)
            return None
        history = load_history(run_dir)
        if len(history) != cfg.epochs:
            raise ValueError(f"history.csv has {len(history)} epochs, not {cfg.epochs}")
        return RunResult(cfg, history, record["best"], run_dir)
    except (OSError, ValueError, KeyError, TypeError, yaml.YAMLError) as e:
        warnings.warn(
            f"damaged run record in {run_dir} ({e}): treated as missing, the run trains again",
            stacklevel=3,
        )
        return None


def stale_reason(record: dict, cfg: TrainConfig) -> str | None:
    """Why a cached run's metrics.json no longer stands for `cfg` (None: it does). The cache key
    counts only the values a run sets (`config_key`), so two things can change under it: how the
    epoch is chosen (records before validation or last-epoch selection chose it on the test set)
    and a method's defaults (the record keeps the hyperparameters it ran with, defaults included,
    `resolved_hparams`)."""
    if "selection" not in record:
        return (
            "recorded before runs selected their epoch on validation or last (its best epoch "
            "was chosen on the test set)"
        )
    then, now = record.get("hparams_resolved"), resolved_hparams(cfg.method, cfg.method_args)
    if then is None:
        return "recorded without the hyperparameters it ran with (its method's defaults then)"
    if then != now:
        changed = sorted(k for k in {*then, *now} if then.get(k) != now.get(k))
        return (
            "the method's hyperparameters (its defaults included) have changed since: "
            + ", ".join(changed)
        )
    return None


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def load_history(run_dir: Path) -> list[dict]:
    """history.csv back into a list of records (numbers as floats/ints)."""
    import csv

    with open(Path(run_dir) / "history.csv") as f:
        return [
            {k: yaml.safe_load(v) if v != "" else None for k, v in row.items()}
            for row in csv.DictReader(f)
        ]


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
    notebook's test set, with the precision and memory format of the notebook's runs."""
    from ..run.build import evaluate_checkpoint as evaluate

    return evaluate(
        arch,
        checkpoint,
        common["dataset"],
        common["in_chans"],
        common["limit_test"],
        device=common["device"],
        seed=common["seed"],
        amp=common.get("amp", "none"),
        channels_last=common.get("channels_last", False),
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
        from ..run.weights import resolve_checkpoint

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


def distil_spec(
    method: str,
    teacher: Teacher,
    student: str,
    common: dict,
    epochs: int,
    tag: str = "",
    **method_args,
) -> tuple[str, dict]:
    """The cache name and values of `student` distilled from `teacher` with `method` (what
    `distil` trains or loads; `grid.distil_run` makes it one run of a grid)."""
    name = f"{student}-from-{teacher.arch}-{method}{'-' + tag if tag else ''}"
    values = dict(
        method=method,
        student=student,
        teacher=teacher.arch,
        teacher_checkpoint=str(teacher.checkpoint),
        epochs=epochs,
        method_args=method_args,
        **common,
    )
    return name, values


def distil(
    method: str,
    teacher: Teacher,
    student: str,
    cache_dir,
    common: dict,
    epochs: int,
    live: bool = False,
    tag: str = "",
    callbacks=(),
    **method_args,
) -> RunResult:
    """Train `student` from `teacher` with `method` (loaded if already trained; `callbacks`
    as in `cached_run`)."""
    name, values = distil_spec(method, teacher, student, common, epochs, tag, **method_args)
    return cached_run(name, cache_dir, live=live, callbacks=callbacks, **values)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def shipped_manifest(root: Path = SHIPPED_DIR) -> dict:
    """The manifest of the shipped runs ({} when there is none): for each run folder its
    architecture, method, test metrics, training config and file checksums, and the library
    and torch versions (written by scripts/ship_cpu_runs.py)."""
    path = Path(root) / "manifest.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def shipped_teacher(arch: str, epoch: int | None = None, root: Path = SHIPPED_DIR) -> Path:
    """A checkpoint of the cpu teacher `arch` shipped in `root` (Fashion-MNIST, 1 x 32 x 32,
    10 classes; its files checked against the manifest): best.pt, or the one its training kept
    after `epoch` (resnet20: 4, 8, 11 of 15)."""
    runs = shipped_manifest(root).get("runs", {}).items()
    names = [n for n, e in runs if e["arch"] == arch and e["role"] == "teacher"]
    if len(names) != 1:
        raise LookupError(f"one shipped {arch} teacher expected in {root}, found {names}")
    run_dir = shipped_run(names[0], root)
    if run_dir is None:
        raise LookupError(f"the shipped {arch} teacher is ignored ({IGNORE_SHIPPED} is set)")
    return run_dir / "checkpoints" / ("best.pt" if epoch is None else f"epoch{epoch}.pt")


def shipped_run(name: str, root: Path = SHIPPED_DIR) -> Path | None:
    """The shipped run folder `name` (a `<name>-<config hash>` folder, as the notebooks' run
    cache names it), its files verified against the manifest; None if not shipped (or while
    DFPT_IGNORE_SHIPPED=1)."""
    entry = shipped_manifest(root).get("runs", {}).get(name)
    if entry is None or os.environ.get(IGNORE_SHIPPED, "") not in ("", "0"):
        return None
    run_dir = Path(root) / name
    for rel, expected in entry["files"].items():
        path = run_dir / rel
        if not path.is_file() or sha256(path) != expected:
            raise RuntimeError(
                f"shipped run file {path} is missing or does not match its sha256 in "
                f"{Path(root) / 'manifest.json'}: restore it with `git checkout -- {path}`"
            )
    return run_dir
