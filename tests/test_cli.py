"""The `dfpt` command line end to end on real Fashion-MNIST subsets, config errors, and
`dfpt teachers fetch` from a local archive in the published layout (no network here)."""

from __future__ import annotations

import io
import json
import tarfile

import pytest
import torch
import yaml
from conftest import tiny_yaml

from dfpt_core.cli import main
from dfpt_core.models import create_model, load_checkpoint
from dfpt_core.run import weights as teachers


def test_train_a_teacher_then_distil_then_eval(tmp_path, fmnist_root, capsys):
    # one epoch each, lr x0.1 after it (the tiny run's 3 epochs are more than this flow needs)
    tiny = dict(epochs=1, milestones=[1])
    teacher_cfg = tiny_yaml(
        tmp_path / "teacher.yaml",
        tmp_path / "runs",
        fmnist_root,
        name="teacher",
        student="resnet14",
        **tiny,
    )
    assert main(["train", "--config", str(teacher_cfg)]) == 0
    out = json.loads(capsys.readouterr().out)
    ckpt = tmp_path / "runs" / "teacher" / "checkpoints" / "best.pt"
    assert out["run_dir"].endswith("teacher") and ckpt.is_file()
    # with the workbook installed, the command line also draws the training curves
    assert (tmp_path / "runs" / "teacher" / "curves.html").is_file()

    student_cfg = tiny_yaml(
        tmp_path / "kd.yaml",
        tmp_path / "runs",
        fmnist_root,
        name="kd",
        method="kd",
        teacher="resnet14",
        teacher_checkpoint=str(ckpt),
        **tiny,
    )
    assert (
        main(["train", "--config", str(student_cfg), "epochs=2", "method_args.temperature=2"]) == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert out["final"]["epoch"] == 2 and "teacher_top1" in out["final"]
    record = yaml.safe_load((tmp_path / "runs" / "kd" / "config.yaml").read_text())
    assert record["method_args"] == {"temperature": 2} and record["epochs"] == 2

    # a resume must keep what determines the result: here the temperature (epochs may grow)
    assert main(["train", "--config", str(student_cfg), "epochs=3", "--resume"]) == 2
    assert "method_args: {'temperature': 2} -> {}" in capsys.readouterr().err
    again = ["train", "--config", str(student_cfg), "method_args.temperature=2", "epochs=3"]
    assert main([*again, "--resume"]) == 0
    history = (tmp_path / "runs" / "kd" / "history.csv").read_text().splitlines()
    assert len(history) == 1 + 3  # two epochs kept, a third added
    assert json.loads(capsys.readouterr().out)["final"]["epoch"] == 3

    assert (
        main(
            [
                "eval",
                "--model",
                "resnet14",
                "--checkpoint",
                str(ckpt),
                "--dataset",
                "fashion_mnist",
                "--data-root",
                str(fmnist_root),
                "--in-chans",
                "1",
                "--limit",
                "128",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    metrics = json.loads(capsys.readouterr().out)
    teacher_record = json.loads((tmp_path / "runs" / "teacher" / "metrics.json").read_text())
    assert metrics["student_top1"] == pytest.approx(teacher_record["best"]["student_top1"])


def test_train_a_cpu_pair_by_name_teacher_first(tmp_path, fmnist_root, capsys):
    """`--scale cpu --pair ... --role teacher`, then `--method ...`: the pair run finds the
    teacher the teacher run wrote (both tiny here, through overrides)."""
    out_dir = tmp_path / "runs"
    tiny = [
        f"data_root={fmnist_root}",
        "limit_train=128",
        "limit_test=64",
        "epochs=1",
        "batch_size=32",
        "device=cpu",
        f"out_dir={out_dir}",
        "progress=false",
    ]
    pair = ["--scale", "cpu", "--pair", "resnet56-resnet20"]
    assert main(["train", *pair, "--role", "teacher", *tiny]) == 0
    out = json.loads(capsys.readouterr().out)
    teacher_dir = out_dir / "teacher-resnet56"
    assert out["run_dir"] == str(teacher_dir)
    record = yaml.safe_load((teacher_dir / "config.yaml").read_text())
    assert (record["method"], record["student"], record["dataset"]) == (
        "ce",
        "resnet56",
        "fashion_mnist",
    )
    assert record["schedule"] == "cosine" and record["channels_last"] is True

    assert main(["train", *pair, "--method", "dkd", *tiny]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (
        out["run_dir"] == str(out_dir / "resnet56-resnet20-dkd") and "teacher_top1" in out["final"]
    )
    record = yaml.safe_load((out_dir / "resnet56-resnet20-dkd" / "config.yaml").read_text())
    assert record["teacher_checkpoint"] == f"{teacher_dir}/checkpoints/best.pt"
    assert record["method_args"] == {"beta": 2.0, "warmup": 1}  # the pair's beta, scaled warm-up
    assert main(["train", *pair, "--method", "dkd", *tiny, "epochs=2", "--resume"]) == 0
    assert json.loads(capsys.readouterr().out)["final"]["epoch"] == 2


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--scale", "huge", "--pair", "vgg13-vgg8", "--method", "kd"], "scale: unknown 'huge'"),
        (["--scale", "cpu", "--pair", "vgg13-vgg9", "--method", "kd"], "allowed: resnet32x4-"),
        (["--scale", "cpu", "--pair", "vgg13-vgg8", "--method", "ce"], "allowed: kd, dkd"),
        (["--scale", "cpu", "--pair", "vgg13-vgg8", "--method", "kd", "epochs=0"], "epochs"),
        (["--scale", "cpu"], "--pair ("),
    ],
)
def test_bad_run_names_fail_before_any_work(tmp_path, argv, message, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["train", *argv]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("epochs=-1", "epochs: must be >= 1"),
        ("method=nope", "method: unknown 'nope'; allowed: ce, kd"),
        ("student=resnet9", "student: unknown model 'resnet9'"),
        ("dataset=mnist", "dataset: unknown 'mnist'; allowed: fashion_mnist"),
        ("lr=fast", "lr: expected float"),
        ("colour=red", "unknown key(s) ['colour']"),
        ("method_args.beta=2", "method_args: ['beta'] not hyperparameters of ce"),
    ],
)
def test_config_errors_fail_before_any_work(tmp_path, override, message, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "method": "ce",
                "student": "resnet8",
                "dataset": "fashion_mnist",
                "out_dir": str(tmp_path),
            }
        )
    )
    assert main(["train", "--config", str(cfg), override]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # nothing was written


def published_archive(path, archs=("resnet56",), corrupt=None):
    """A tar in the published layout cifar_teachers/<arch>_vanilla/ckpt_epoch_240.pth."""
    with tarfile.open(path, "w") as tar:
        for arch in archs:
            buf = io.BytesIO()
            model = create_model(corrupt or arch, num_classes=100)
            torch.save({"model": model.state_dict(), "epoch": 240}, buf)
            info = tarfile.TarInfo(f"cifar_teachers/{arch}_vanilla/ckpt_epoch_240.pth")
            info.size = buf.tell()
            buf.seek(0)
            tar.addfile(info, buf)
    return path


def test_teachers_fetch_from_a_local_archive(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DFPT_DATA_DIR", str(tmp_path / "data"))
    archive = published_archive(tmp_path / "cifar_teachers.tar", ("resnet56", "wrn_40_2"))
    assert main(["teachers", "fetch", "--url", archive.as_uri()]) == 0
    assert "resnet56, wrn_40_2" in capsys.readouterr().out
    path = teachers.resolve_checkpoint("published", "resnet56")
    assert path == tmp_path / "data/teachers/cifar_teachers/resnet56_vanilla/ckpt_epoch_240.pth"
    load_checkpoint(create_model("resnet56", num_classes=100), path)
    assert teachers.resolve_checkpoint(None, "wrn_40_2").is_file()  # "teacher: wrn_40_2" works
    assert main(["teachers", "list"]) == 0
    assert "(not fetched)" in capsys.readouterr().out  # e.g. vgg13


def test_teachers_fetch_failures_leave_nothing_behind(tmp_path, capsys):
    root = tmp_path / "teachers"
    with pytest.raises(RuntimeError, match="could not download"):
        teachers.fetch((tmp_path / "missing.tar").as_uri(), root)
    (tmp_path / "broken.tar").write_bytes(b"not a tar archive at all")
    with pytest.raises(RuntimeError, match="not a valid tar"):
        teachers.fetch((tmp_path / "broken.tar").as_uri(), root)
    wrong = published_archive(tmp_path / "wrong.tar", ("resnet56",), corrupt="resnet20")
    with pytest.raises(RuntimeError, match="does not load into resnet56"):
        teachers.fetch(wrong.as_uri(), root)
    assert list(root.iterdir()) == []  # no partial download, no half-extracted folder
    with pytest.raises(FileNotFoundError, match="dfpt teachers fetch"):
        teachers.resolve_checkpoint("published", "resnet56", root)


def test_missing_published_teacher_points_to_fetch(tmp_path, monkeypatch, fmnist_root, capsys):
    monkeypatch.setenv("DFPT_DATA_DIR", str(tmp_path))  # no teachers fetched there
    cfg = tiny_yaml(
        tmp_path / "c.yaml",
        tmp_path / "runs",
        fmnist_root,
        method="kd",
        student="resnet8x4",
        teacher="resnet32x4",
    )
    assert main(["train", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "teacher: no checkpoint for resnet32x4" in err and "dfpt teachers fetch" in err
    assert not (tmp_path / "runs").exists()
