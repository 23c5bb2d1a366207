"""Bad input gives an error that names the file or key and the fix, never a traceback from deep
inside: the probes of the reliability issue, one test each (README, "Reliability")."""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

import pytest
import torch
from conftest import tiny_config

from dfpt_core.engine import records
from dfpt_core.engine.records import RunFolderError
from dfpt_core.engine.trainer import NonFiniteLossError, Trainer
from dfpt_core.methods import Distiller
from dfpt_core.models import (
    CheckpointError,
    create_model,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from dfpt_core.run.build import build, run
from dfpt_core.run.config import ConfigError, load_config


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return path


def test_a_config_that_is_not_yaml_names_the_file_and_line(tmp_path):
    path = write(tmp_path, "method: kd\nstudent: [resnet8\n")
    with pytest.raises(ConfigError, match=rf"(?s){path} is not valid YAML.*line 2, column 10"):
        load_config(path)


def test_an_empty_config_is_an_error(tmp_path):
    path = write(tmp_path, "# nothing here\n")
    with pytest.raises(ConfigError, match=rf"config file {path} is empty"):
        load_config(path)


def test_a_key_given_twice_is_an_error(tmp_path):
    path = write(tmp_path, "method: kd\nlr: 0.05\nstudent: resnet8\nlr: 0.1\n")
    with pytest.raises(ConfigError, match=rf"{path}, line 4: key 'lr' is given twice"):
        load_config(path)


def test_float_keys_accept_exponents_that_yaml_reads_as_text(tmp_path):
    path = write(tmp_path, "method: ce\nstudent: resnet8\nlr: 1e-3\nweight_decay: 5e-4\n")
    cfg = load_config(path)
    assert cfg.lr == 0.001 and cfg.weight_decay == 0.0005
    with pytest.raises(ConfigError, match="lr: expected float, got str 'fast'"):
        load_config(path, ["lr=fast"])


@pytest.mark.parametrize("name", ["../..", "..", "a/b", "."])
def test_a_run_name_cannot_leave_out_dir(name):
    with pytest.raises(ConfigError, match="name: must be a plain folder name inside out_dir"):
        load_config(None, [f"name={name}", "method=ce"])


def test_an_unknown_model_option_names_the_key_and_the_allowed_ones():
    with pytest.raises(ConfigError, match=r"student_args: \['depth'\] are not options of resnet8"):
        load_config(None, ["method=ce", "student=resnet8", "student_args.depth=3"])
    with pytest.raises(
        ConfigError,
        match=r"teacher_args: \['foo'\] are not options of tv_resnet18; allowed: .*stem",
    ):
        load_config(None, ["teacher=tv_resnet18", "teacher_args.foo=1"])


def test_an_out_dir_that_is_a_file_is_named(tmp_path, fmnist_root):
    (tmp_path / "out").write_text("not a folder")
    with pytest.raises(RunFolderError, match=rf"{tmp_path / 'out'} is a file, not a folder"):
        run(tiny_config(tmp_path / "out", fmnist_root, epochs=1))


def test_a_read_only_out_dir_is_named(tmp_path, fmnist_root, monkeypatch):
    # simulated: the suite runs as root in CI, and root writes through permission bits
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path / "run"))

    monkeypatch.setattr(records.tempfile, "TemporaryFile", refuse)
    with pytest.raises(RunFolderError, match=r"cannot write in .*run: permission denied"):
        run(tiny_config(tmp_path, fmnist_root, epochs=1))


def test_disk_full_says_no_space_left_and_where(tmp_path, monkeypatch):
    def full(obj, f):
        raise RuntimeError(
            "[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing "
            "file data/0: file write failed"
        )

    monkeypatch.setattr(torch, "save", full)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(1, 1, 0))
    with pytest.raises(OSError, match=rf"no space left on the device of {tmp_path}") as err:
        save_checkpoint({"x": torch.zeros(1)}, tmp_path / "last.pt")
    assert err.value.errno == errno.ENOSPC
    assert list(tmp_path.iterdir()) == []  # no half-written file left


def test_random_bytes_are_not_a_checkpoint(tmp_path):
    path = tmp_path / "weights.pt"
    path.write_bytes(bytes(range(7, 200)))
    with pytest.raises(CheckpointError, match=r"weights.pt is not a checkpoint"):
        load_checkpoint(create_model("resnet8", num_classes=10), path)


class ExplodingMethod(Distiller):
    """CE whose loss turns NaN at a given global step."""

    def __init__(self, student, at_step):
        super().__init__(student)
        self.at_step, self.calls = at_step, 0

    def forward_train(self, images, targets, epoch=0):
        self.calls += 1
        logits = self.student(images)
        ce = torch.nn.functional.cross_entropy(logits, targets)
        bad = ce * float("nan") if self.calls == self.at_step else ce
        return logits, {"ce": ce, "boom": bad - ce}


@pytest.mark.parametrize("epoch", [1, 2])
def test_a_nan_stops_naming_the_step_and_the_checkpoint_only_if_one_exists(
    tmp_path, fmnist_root, epoch
):
    cfg = tiny_config(tmp_path, fmnist_root)
    distiller, train_loader, test_loader, _, _, _ = build(cfg)
    method = ExplodingMethod(distiller.student, at_step=(epoch - 1) * len(train_loader) + 3)
    trainer = Trainer(method, train_loader, test_loader, cfg, run_dir=tmp_path / "run")
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    kept = f"the last good checkpoint is {last}" if epoch > 1 else "no checkpoint was saved"
    with pytest.raises(NonFiniteLossError, match=rf"epoch {epoch}, step 3: boom .*{kept}"):
        trainer.fit()
    assert last.is_file() == (epoch > 1)
    if epoch > 1:
        state = read_checkpoint(last)
        assert state["epoch"] == 1 and all(
            torch.isfinite(v).all() for v in state["distiller"].values() if v.is_floating_point()
        )
