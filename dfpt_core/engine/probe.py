"""Every-N-steps records of a run's paths on a fixed batch: the trainer's per-epoch metrics
(`metrics.evaluate`: each path's top-1 and true-class confidence, agreement between paths, KL of
the prompt path to teacher and student) at a finer grain, e.g. the easy-to-hard picture of
DFPT-KD's prompt path (the paper's Fig. 3 shows the prompt path's training accuracy).

Evaluating in eval mode under no_grad changes neither the weights, nor BatchNorm statistics, nor
any random state, so a probed run trains exactly as an unprobed one (tests/test_probe.py)."""

from __future__ import annotations

import json

from torch import Tensor

from .metrics import evaluate
from .records import atomic_write_text

PROBE_FILE = "probe.json"


class PathProbe:
    """A Trainer callback: `evaluate` on (`images`, `targets`) at step 0 and after every
    `every` optimizer steps (counted over the whole run), at the method's metric temperature
    and the run's device. `records` holds one dict per probe with "step" and "epoch" (a
    fractional epoch); with a run folder they are written to `<run_dir>/probe.json` after every
    epoch, and a resumed run continues from the probes of its last saved epoch."""

    def __init__(self, images: Tensor, targets: Tensor, every: int):
        if every < 1:
            raise ValueError(f"PathProbe(every=...) must be >= 1, got {every}")
        self.images, self.targets, self.every = images, targets, every
        self.records: list[dict] = []

    def _probe(self, trainer, step: int) -> None:
        batch = [(self.images.to(trainer.device), self.targets.to(trainer.device))]
        temperature = trainer.distiller.metric_temperature
        record = evaluate(trainer.distiller, batch, temperature)
        steps = len(trainer.train_loader)
        self.records.append({"step": step, "epoch": step / steps, **record})

    def on_train_start(self, trainer) -> None:
        done = trainer.epoch * len(trainer.train_loader) + trainer.step
        path = trainer.run_dir / PROBE_FILE if trainer.run_dir is not None else None
        if done and path is not None and path.is_file():
            self.records = [r for r in json.loads(path.read_text()) if r["step"] <= done]
        if not any(r["step"] == done for r in self.records):
            self._probe(trainer, done)

    def on_step_end(self, trainer, step: int) -> None:
        if step % self.every == 0:
            self._probe(trainer, step)

    def on_epoch_end(self, trainer, record: dict) -> None:
        if trainer.run_dir is not None and trainer.is_main:
            text = json.dumps(self.records, indent=1) + "\n"
            atomic_write_text(trainer.run_dir / PROBE_FILE, text)
