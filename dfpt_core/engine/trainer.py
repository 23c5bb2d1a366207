"""The training engine: one loop for teachers (method "ce"), every distillation method, the
notebooks, papermill runs and the `dfpt` command line.

Features: SGD with per-group learning rates from `Distiller.param_groups`, multi-step or cosine
schedule with optional linear warmup, gradient clipping over every trainable group, bf16/fp16
autocast, channels_last, optional torch.compile, on a CPU freed memory kept for the next step
(`cpu_malloc`), DistributedDataParallel under torchrun, atomic
checkpoints every epoch with exact resume (also from a Ctrl-C in mid-epoch), a NaN/inf guard,
run records (config.yaml, metrics.json, history.csv, curves.html, checkpoints/).
"""

from __future__ import annotations

import csv
import io
import json
import math
import signal
import threading
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import yaml
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

if TYPE_CHECKING:  # annotations only: the engine does not import the run layer
    from ..run.config import TrainConfig

from ..models.checkpoint import read_checkpoint, save_checkpoint
from .metrics import evaluate
from .records import (
    RunFolderError,
    atomic_write_text,
    clear_run,
    config_changes,
    existing_run,
    make_run_dir,
    remove_stale_temps,
    run_lock,
)
from .runtime import (
    DistInfo,
    device_name,
    keep_freed_memory,
    resolve_amp,
    rng_state,
    set_rng_state,
    versions,
)


class NonFiniteLossError(FloatingPointError):
    """A loss became NaN or inf; the message names the epoch, the step and the losses."""


def lr_factor(cfg: TrainConfig, epoch: int) -> float:
    """Learning-rate multiplier for a (0-based) epoch: linear warmup, then multi-step
    (x gamma at each milestone, milestones in 1-based epochs as in the papers) or cosine."""
    if epoch < cfg.warmup_epochs:
        return (epoch + 1) / cfg.warmup_epochs
    if cfg.schedule == "cosine":
        span = max(1, cfg.epochs - cfg.warmup_epochs)
        return 0.5 * (1 + math.cos(math.pi * (epoch - cfg.warmup_epochs) / span))
    return cfg.gamma ** sum(epoch >= m for m in cfg.milestones)


def autocast_context(device: torch.device, amp: str):
    if amp == "none":
        return nullcontext()
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


class RunInterrupted(KeyboardInterrupt):
    """Training stopped on Ctrl-C or SIGTERM after saving a checkpoint from which `--resume`
    continues exactly; `signum` is the signal."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
VAL_TOP1 = "val_student_top1"  # the record key that selects the epoch when a run validates


@contextmanager
def deferred_interrupt():
    """Turn Ctrl-C (SIGINT, also Jupyter's "interrupt kernel") and SIGTERM into a flag
    (`flag["signum"]`) that the loop checks between optimizer steps and at the end of an
    epoch, so a checkpoint is only ever taken of a consistent state. A second signal stops at
    once (KeyboardInterrupt) without saving: the last checkpoint then stays the consistent one."""
    flag = {"signum": None}
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        if flag["signum"] is not None:
            raise KeyboardInterrupt
        flag["signum"] = signum

    previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}
    try:
        yield flag
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


class Trainer:
    """Train a Distiller with `cfg`'s optimiser/schedule settings.

    `fit()` runs the remaining epochs (resuming from `run_dir/checkpoints/last.pt` when
    `resume=True`) and returns the final metrics; `history` holds one record per epoch, scored on
    `test_loader` and, given a `val_loader`, also on the validation split (`val_` keys).
    `best` (and checkpoints/best.pt) is the selected epoch (`selection`): the highest
    validation top-1 with a `val_loader`, else the last epoch; never chosen on the test set.
    """

    def __init__(
        self,
        distiller,
        train_loader,
        test_loader,
        cfg: TrainConfig,
        run_dir: str | Path | None = None,
        callbacks=(),
        dist: DistInfo | None = None,
        device: torch.device | str = "cpu",
        progress: bool | None = None,
        val_loader=None,
    ):
        self.distiller, self.cfg = distiller, cfg
        self.train_loader, self.test_loader, self.val_loader = train_loader, test_loader, val_loader
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.callbacks = list(callbacks)
        self.step_callbacks = [cb for cb in self.callbacks if hasattr(cb, "on_step_end")]
        self.dist = dist or DistInfo()
        self.device = torch.device(device)
        self.progress = cfg.progress if progress is None else progress
        self.distiller.to(self.device)
        if self.device.type == "cpu" and cfg.cpu_malloc == "keep":
            keep_freed_memory()
        if cfg.channels_last:
            self.distiller.to(memory_format=torch.channels_last)
        if cfg.compile:
            for module in (self.distiller.student, *self.distiller.teachers.values()):
                module.compile()
        self.model = self.distiller
        if self.dist.world_size > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = DistributedDataParallel(self.distiller, device_ids=ids)
        self.optimizer = torch.optim.SGD(
            distiller.param_groups(cfg.lr, cfg.weight_decay),
            lr=cfg.lr,
            momentum=cfg.momentum,
            nesterov=cfg.nesterov,
            weight_decay=cfg.weight_decay,
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda e: lr_factor(cfg, e)
        )
        self.amp = resolve_amp(cfg.amp, self.device)  # "auto" read from the device once
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp == "fp16")
        self.history: list[dict] = []
        self.epoch, self.step = 0, 0  # next epoch to run, batches already done in it
        self.best: dict = {}
        self._sums: dict[str, float] = {}
        self.seconds = 0.0

    # --- records ------------------------------------------------------------------------
    @property
    def selection(self) -> str:
        """How `best` is chosen: "val_student_top1" (highest, first on ties) or "last_epoch"."""
        return VAL_TOP1 if self.val_loader is not None else "last_epoch"

    @property
    def is_main(self) -> bool:
        return self.dist.is_main

    @property
    def checkpoint_dir(self) -> Path | None:
        return self.run_dir / "checkpoints" if self.run_dir is not None else None

    def state(self) -> dict:
        """Everything needed to continue exactly where the loop is now."""
        return {
            "distiller": self.distiller.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "sums": dict(self._sums),
            "history": self.history,
            "best": self.best,
            "rng": rng_state(),
            "seconds": self.seconds,
            "config": self.cfg.to_dict(),
        }

    def save(self, name: str = "last") -> Path | None:
        if self.checkpoint_dir is None or not self.is_main:
            return None
        return save_checkpoint(self.state(), self.checkpoint_dir / f"{name}.pt")

    def load(self, path: str | Path) -> None:
        ckpt = read_checkpoint(path)
        self.distiller.load_state_dict(ckpt["distiller"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])
        self.epoch, self.step, self._sums = ckpt["epoch"], ckpt["step"], dict(ckpt["sums"])
        self.history, self.best, self.seconds = list(ckpt["history"]), ckpt["best"], ckpt["seconds"]
        set_rng_state(ckpt["rng"])

    def _write_records(self) -> None:
        """config.yaml, history.csv and metrics.json, each written atomically."""
        if self.run_dir is None or not self.is_main:
            return
        atomic_write_text(
            self.run_dir / "config.yaml", yaml.safe_dump(self.cfg.to_dict(), sort_keys=False)
        )
        keys = list(dict.fromkeys(k for rec in self.history for k in rec))
        table = io.StringIO(newline="")
        writer = csv.DictWriter(table, fieldnames=keys)
        writer.writeheader()
        writer.writerows(self.history)
        atomic_write_text(self.run_dir / "history.csv", table.getvalue())
        atomic_write_text(self.run_dir / "metrics.json", json.dumps(self.summary(), indent=2))

    def summary(self) -> dict:
        """metrics.json: final and best metrics, timings, versions, seed, device."""
        epochs = len(self.history)
        return {
            "name": self.cfg.name,
            "method": self.cfg.method,
            "student": self.cfg.student,
            "teacher": self.cfg.teacher,
            "dataset": self.cfg.dataset,
            "seed": self.cfg.seed,
            "epochs_completed": epochs,
            "epochs": self.cfg.epochs,
            "final": self.history[-1] if self.history else {},
            "best": self.best,
            "selection": self.selection,
            "seconds": self.seconds,
            "seconds_per_epoch": self.seconds / max(1, epochs),
            "device": str(self.device),
            "device_name": device_name(self.device),
            "world_size": self.dist.world_size,
            # the floating-point result of a CPU step depends on it (a resumed run is bit-equal
            # to an uninterrupted one only on the same thread count)
            "threads": torch.get_num_threads(),
            "amp": self.amp,  # as run ("auto" resolved); the configured value is in config.yaml
            "versions": versions(),
            "hparams": dict(self.cfg.method_args),
            "hparams_resolved": self.distiller.hparams_record(),
        }

    # --- the loop -------------------------------------------------------------------------
    def fit(self, resume: bool = False, overwrite: bool = False) -> dict:
        """Train the remaining epochs and return the last epoch's record.

        The run folder is owned by this process while it trains (a second process is refused).
        Where a run exists already, it continues with `resume` (only with the configuration
        that produced it: see `records.config_changes`) or starts again with `overwrite`;
        otherwise that is an error. Each epoch (training steps, scheduler step, evaluation,
        checkpoints, records) is one unit: Ctrl-C or SIGTERM inside it is honoured between
        optimizer steps or after the unit, always leaving a checkpoint from which `resume`
        reproduces the uninterrupted run exactly; RunInterrupted is then raised.
        """
        with self._own_run_dir(resume, overwrite):
            if resume:
                self._resume()
            self._write_records()
            for cb in self.callbacks:
                if hasattr(cb, "on_train_start"):
                    cb.on_train_start(self)
            with deferred_interrupt() as stop:
                while self.epoch < self.cfg.epochs:
                    self._epoch_unit(stop)
            for cb in self.callbacks:
                if hasattr(cb, "on_train_end"):
                    cb.on_train_end(self)
        return self.history[-1]

    @contextmanager
    def _own_run_dir(self, resume: bool, overwrite: bool):
        if self.run_dir is None or not self.is_main:
            yield
            return
        make_run_dir(self.run_dir)
        with run_lock(self.run_dir):
            remove_stale_temps(self.run_dir)
            found = existing_run(self.run_dir)
            if found and not resume:
                if not overwrite:
                    raise RunFolderError(
                        f"{self.run_dir} already holds {found}: continue it with --resume "
                        "(resume=True), or start it again with --overwrite (overwrite=True)"
                    )
                clear_run(self.run_dir)
            yield

    def _resume(self) -> None:
        last = self.checkpoint_dir / "last.pt" if self.checkpoint_dir else None
        if last is None or not last.is_file():
            raise FileNotFoundError(f"nothing to resume: {last} does not exist")
        stored = read_checkpoint(last).get("config", {})
        changed = config_changes(stored, self.cfg.to_dict())
        if changed:
            listed = "; ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changed.items())
            raise RunFolderError(
                f"cannot resume {self.run_dir} with another configuration ({listed}): these "
                "keys determine the result. Resume with the stored values, or train under "
                "another name"
            )
        self.load(last)

    def _epoch_unit(self, stop: dict) -> None:
        """One epoch as one unit: steps, schedule, evaluation, checkpoints and records."""
        record = self._run_epoch(self.epoch, stop)
        self.history.append(record)
        if self.selection == "last_epoch" or record[VAL_TOP1] > self.best.get(VAL_TOP1, -1.0):
            self.best = dict(record)
            self._save_student("best.pt")
        if record["epoch"] in self.cfg.keep_checkpoints:
            self._save_student(f"epoch{record['epoch']}.pt")
        self.epoch, self.step, self._sums = self.epoch + 1, 0, {}
        saved = self.epoch % self.cfg.checkpoint_every == 0 or self.epoch == self.cfg.epochs
        if saved or stop["signum"] is not None:
            self.save("last")
        self._write_records()
        for cb in self.callbacks:
            if hasattr(cb, "on_epoch_end"):
                cb.on_epoch_end(self, record)
        if stop["signum"] is not None:
            raise self._interrupted(stop["signum"])

    def _interrupted(self, signum: int) -> RunInterrupted:
        where = (
            f"after epoch {self.epoch}"
            if self.step == 0
            else (f"in epoch {self.epoch + 1} after step {self.step}")
        )
        saved = self.checkpoint_dir / "last.pt" if self.checkpoint_dir else None
        message = f"{signal.Signals(signum).name}: stopped {where}" + (
            f"; saved {saved} (continue with resume=True / --resume)" if saved else ""
        )
        if self.is_main:
            print(f"\n{message}")
        return RunInterrupted(message, signum)

    def _save_student(self, filename: str) -> None:
        """The student's weights after the current epoch, in the RepDistiller/mdistiller
        format ({"model": state_dict, ...}) that load_checkpoint reads."""
        if self.checkpoint_dir is None or not self.is_main:
            return
        save_checkpoint(
            {
                "model": self.distiller.student.state_dict(),
                "epoch": self.epoch + 1,
                "accuracy": self.history[-1]["student_top1"],
                "arch": self.cfg.student,
            },
            self.checkpoint_dir / filename,
        )

    def _run_epoch(self, epoch: int, stop: dict) -> dict:
        cfg, start = self.cfg, time.time()
        self.train_loader.set_epoch(epoch)
        self.model.train()
        self.distiller.on_epoch_start(epoch)
        autocast = autocast_context(self.device, self.amp)
        clip = self.distiller.clip_parameters() if cfg.clip_grad_norm else None
        bar = tqdm(
            total=len(self.train_loader),
            desc=f"epoch {epoch + 1}/{cfg.epochs}",
            disable=not (self.progress and self.is_main),
            leave=False,
            mininterval=1.0,
        )
        skip, saved_rng = self.step, rng_state() if self.step else None
        bar.update(skip)
        try:
            self._train_steps(epoch, skip, saved_rng, autocast, clip, bar, stop)
        finally:
            bar.close()
        self._sync_buffers()
        self.scheduler.step()
        train_time = time.time() - start
        self.seconds += train_time
        record = {
            "epoch": epoch + 1,
            "lr": self.optimizer.param_groups[0]["lr"],
            **self._train_means(),
        }
        temperature = self.distiller.metric_temperature
        record.update(evaluate(self.distiller, self.test_loader, temperature, autocast))
        if self.val_loader is not None:
            scores = evaluate(self.distiller, self.val_loader, temperature, autocast)
            record.update({f"val_{k}": v for k, v in scores.items() if k.startswith("student_")})
        record["seconds"] = time.time() - start
        return record

    def _train_steps(self, epoch, skip, saved_rng, autocast, clip, bar, stop) -> None:
        cfg = self.cfg
        for i, (images, targets) in enumerate(self.train_loader):
            if i < skip:  # resuming in mid-epoch: replay the loader's order up to the stop
                if i == skip - 1:
                    set_rng_state(saved_rng)
                continue
            with autocast:
                logits, losses = self.model(images, targets, epoch=epoch)
            loss = sum(losses.values())
            if not torch.isfinite(loss):
                bad = [k for k, v in losses.items() if not torch.isfinite(v)]
                values = [float(losses[k].detach()) for k in bad]
                raise NonFiniteLossError(
                    f"non-finite loss at epoch {epoch + 1}, step {i + 1}: "
                    f"{', '.join(bad) or 'total'} = {values}; " + self._last_good()
                )
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            if clip:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(clip, cfg.clip_grad_norm)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self._accumulate(losses, loss, logits, targets)
            self.step = i + 1
            bar.update(1)
            for cb in self.step_callbacks:
                cb.on_step_end(self, epoch * len(self.train_loader) + self.step)
            if stop["signum"] is not None and self.step < len(self.train_loader):
                self.save("last")  # mid-epoch: the state after a whole optimizer step
                raise self._interrupted(stop["signum"])

    def _last_good(self) -> str:
        """Where the last good state is, for error messages (only what exists)."""
        last = self.checkpoint_dir / "last.pt" if self.checkpoint_dir else None
        if last is not None and last.is_file():
            return f"the last good checkpoint is {last} (resume from it with other settings)"
        return "no checkpoint was saved before it"

    def _sync_buffers(self) -> None:
        """DDP: every rank takes rank 0's BN statistics at the end of an epoch (DDP broadcasts
        them before each forward, so after the last step they differ by one update)."""
        if self.dist.world_size > 1:
            for buf in self.distiller.buffers():
                torch.distributed.broadcast(buf, src=0)

    def _accumulate(self, losses, loss, logits, targets) -> None:
        s = self._sums
        for k, v in losses.items():
            s[k] = s.get(k, 0.0) + float(v.detach())
        s["loss"] = s.get("loss", 0.0) + float(loss.detach())
        s["correct"] = s.get("correct", 0.0) + float((logits.argmax(1) == targets).sum())
        s["seen"] = s.get("seen", 0.0) + len(targets)
        s["batches"] = s.get("batches", 0.0) + 1

    def _train_means(self) -> dict:
        s = dict(self._sums)
        if self.dist.world_size > 1:  # average over ranks
            keys = sorted(s)
            t = torch.tensor([s[k] for k in keys], dtype=torch.float64, device=self.device)
            torch.distributed.all_reduce(t)
            s = dict(zip(keys, t.tolist(), strict=True))
        batches = max(1.0, s.pop("batches", 1.0))
        correct, seen = s.pop("correct", 0.0), max(1.0, s.pop("seen", 1.0))
        out = {f"train_{k}" if k != "loss" else "loss": v / batches for k, v in s.items()}
        out["train_top1"] = 100.0 * correct / seen
        return out


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, DistributedDataParallel) else model
