"""One protected epoch: Ctrl-C (SIGINT) or SIGTERM anywhere in an epoch - a training step, the
evaluation, a checkpoint save - stops the run with a checkpoint from which `resume` gives
exactly the uninterrupted run's history and weights."""

from __future__ import annotations

import os
import signal

import pytest
import torch
from conftest import tiny_config, untimed

from dfpt_core.engine import trainer as trainer_module
from dfpt_core.engine.trainer import RunInterrupted, Trainer
from dfpt_core.models import read_checkpoint
from dfpt_core.run.build import build, run


def send(signum):
    os.kill(os.getpid(), signum)


class SignalAtStep:
    """A loader wrapper that sends `signum` while batch `at` of `epoch` (0-based) trains."""

    def __init__(self, loader, signum, epoch=1, at=3):
        self.loader, self.signum, self.epoch, self.at, self.current = loader, signum, epoch, at, 0

    def set_epoch(self, epoch):
        self.current = epoch
        self.loader.set_epoch(epoch)

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        for i, batch in enumerate(self.loader):
            if self.current == self.epoch and i == self.at:
                send(self.signum)
            yield batch


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, fmnist_root):
    return run(tiny_config(tmp_path_factory.mktemp("full"), fmnist_root, name="full"))


def interrupted_then_resumed(tmp_path, fmnist_root, monkeypatch, point, signum):
    """Train with `signum` sent at `point` of the second epoch, then resume; the resumed run."""
    cfg = tiny_config(tmp_path, fmnist_root, name="cut")
    distiller, train_loader, test_loader, _, device, _ = build(cfg)
    if point == "step":
        train_loader = SignalAtStep(train_loader, signum)
    elif point == "evaluation":
        calls, real = [], trainer_module.evaluate

        def evaluate(*args, **kwargs):
            calls.append(1)
            if len(calls) == 2:
                send(signum)
            return real(*args, **kwargs)

        monkeypatch.setattr(trainer_module, "evaluate", evaluate)
    else:  # the save of best.pt / last.pt in the second epoch
        saves, real = [], trainer_module.save_checkpoint

        def save_checkpoint(obj, path):
            saves.append(path)
            if len(saves) == 3:  # epoch 1: best.pt, last.pt; epoch 2: the first save
                send(signum)
            return real(obj, path)

        monkeypatch.setattr(trainer_module, "save_checkpoint", save_checkpoint)
    cut = Trainer(distiller, train_loader, test_loader, cfg, run_dir=tmp_path / "cut")
    with pytest.raises(RunInterrupted) as stopped:
        cut.fit()
    assert stopped.value.signum == signum and "--resume" in str(stopped.value)
    monkeypatch.undo()
    state = read_checkpoint(tmp_path / "cut" / "checkpoints" / "last.pt")
    # mid-step: after the whole optimizer step 4 of epoch 2; elsewhere: after epoch 2 as a unit
    assert (state["epoch"], state["step"]) == ((1, 4) if point == "step" else (2, 0))
    assert len(state["history"]) == state["epoch"]  # no epoch row lost or doubled
    distiller, train_loader, test_loader, _, device, _ = build(cfg)
    resumed = Trainer(distiller, train_loader, test_loader, cfg, run_dir=tmp_path / "cut")
    resumed.fit(resume=True)
    return resumed


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("point", ["step", "evaluation", "save"])
def test_interrupt_then_resume_equals_uninterrupted(
    tmp_path, fmnist_root, monkeypatch, uninterrupted, point, signum
):
    resumed = interrupted_then_resumed(tmp_path, fmnist_root, monkeypatch, point, signum)
    assert untimed(resumed.history) == untimed(uninterrupted.history)
    expected = uninterrupted.distiller.student.state_dict()
    for k, v in resumed.distiller.student.state_dict().items():
        assert torch.equal(v, expected[k]), k
    assert [g["lr"] for g in resumed.optimizer.param_groups] == [
        g["lr"] for g in uninterrupted.optimizer.param_groups
    ]  # the schedule stepped once per epoch


def test_a_second_signal_stops_at_once_and_the_last_checkpoint_stays_consistent(
    tmp_path, fmnist_root, monkeypatch, uninterrupted
):
    cfg = tiny_config(tmp_path, fmnist_root, name="cut")
    distiller, train_loader, test_loader, _, device, _ = build(cfg)
    calls, real = [], trainer_module.evaluate

    def evaluate(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # epoch 2's evaluation: two Ctrl-C in a row
            send(signal.SIGINT)
            send(signal.SIGINT)
        return real(*args, **kwargs)

    monkeypatch.setattr(trainer_module, "evaluate", evaluate)
    with pytest.raises(KeyboardInterrupt) as stopped:
        Trainer(distiller, train_loader, test_loader, cfg, run_dir=tmp_path / "cut").fit()
    assert not isinstance(stopped.value, RunInterrupted)  # no save was attempted
    monkeypatch.undo()
    assert read_checkpoint(tmp_path / "cut" / "checkpoints" / "last.pt")["epoch"] == 1
    distiller, train_loader, test_loader, _, device, _ = build(cfg)
    resumed = Trainer(distiller, train_loader, test_loader, cfg, run_dir=tmp_path / "cut")
    resumed.fit(resume=True)
    assert untimed(resumed.history) == untimed(uninterrupted.history)
