"""The training engine on real Fashion-MNIST subsets: records, determinism, exact resume (after
an epoch and in mid-epoch), the NaN guard, schedules, bf16 autocast, compile and DDP (gloo)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import shipped_checkpoint, tiny_values, tiny_yaml, untimed
from conftest import tiny_config as tiny

from dfpt_core.data import make_loader
from dfpt_core.engine.metrics import evaluate
from dfpt_core.engine.runtime import keep_freed_memory
from dfpt_core.engine.trainer import Trainer, lr_factor
from dfpt_core.methods import create
from dfpt_core.models import read_checkpoint
from dfpt_core.run.build import build, run
from dfpt_core.run.config import CPU_MALLOC_MODES, make_config
from dfpt_core.run.weights import load_network
from dfpt_core.workbook.cache import config_key

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def teacher_ckpt():
    """The shipped cpu resnet8 (trained on this data; its test accuracy in the manifest): a real
    teacher at the cost of the smallest student."""
    return shipped_checkpoint("resnet8")


def test_the_validation_split_selects_the_epoch(tmp_path, fmnist_root):
    trainer = run(tiny(tmp_path, fmnist_root, val_size=300, epochs=4, milestones=[3]))
    history = trainer.history
    assert all(0 <= h["val_student_top1"] <= 100 and "val_student_pt" in h for h in history)
    assert not any(k.startswith("val_teacher") for k in history[0])
    scores = [h["val_student_top1"] for h in history]
    chosen = history[scores.index(max(scores))]  # the first epoch with the highest score
    metrics = json.loads((trainer.run_dir / "metrics.json").read_text())
    assert metrics["selection"] == "val_student_top1" and metrics["best"] == chosen
    assert read_checkpoint(trainer.run_dir / "checkpoints" / "best.pt")["epoch"] == chosen["epoch"]
    # the selected epoch's weights are the ones in best.pt: re-scored, the same validation top-1
    val = make_loader(
        "fashion_mnist", False, 128, root=fmnist_root, in_chans=1, val_size=300, validation=True
    )
    student = load_network("resnet8", str(trainer.run_dir / "checkpoints/best.pt"), 10, 1, "model")
    assert (
        evaluate(create("ce", student=student), val)["student_top1"] == chosen["val_student_top1"]
    )


def test_run_records_and_learning(tmp_path, fmnist_root):
    trainer = run(tiny(tmp_path, fmnist_root, keep_checkpoints=[1, 2]))
    rd = trainer.run_dir
    assert not (rd / "curves.html").exists()  # figures are the workbook's, passed in as callbacks
    for name in (
        "config.yaml",
        "metrics.json",
        "history.csv",
        "checkpoints/last.pt",
        "checkpoints/best.pt",
    ):
        assert (rd / name).is_file(), name
    cfg = yaml.safe_load((rd / "config.yaml").read_text())
    assert cfg["method"] == "ce" and cfg["epochs"] == 3
    metrics = json.loads((rd / "metrics.json").read_text())
    assert metrics["epochs_completed"] == 3 and metrics["seed"] == 0
    assert metrics["device"] == "cpu" and metrics["versions"]["torch"] == torch.__version__
    # no validation split: the selected epoch is the last one, never the best on the test set
    assert metrics["selection"] == "last_epoch" and metrics["best"] == trainer.history[-1]
    lines = (rd / "history.csv").read_text().splitlines()
    assert len(lines) == 4 and "student_top1" in lines[0]
    # it learns: the training loss falls epoch over epoch (256 images are too few for a test
    # accuracy bound that holds on every CPU)
    losses = [h["loss"] for h in trainer.history]
    assert losses == sorted(losses, reverse=True) and losses[-1] < losses[0]
    # multi-step schedule: x0.1 from epoch 2 on (milestone 2, 1-based)
    assert [round(h["lr"], 6) for h in trainer.history] == [0.05, 0.005, 0.005]
    best = read_checkpoint(rd / "checkpoints" / "best.pt")
    assert set(best["model"]) == set(trainer.distiller.student.state_dict())
    assert best["epoch"] == 3
    kept = {k: read_checkpoint(rd / "checkpoints" / f"epoch{k}.pt") for k in (1, 2)}
    assert [kept[k]["epoch"] for k in (1, 2)] == [1, 2]
    assert kept[2]["accuracy"] == trainer.history[1]["student_top1"]
    assert not (rd / "checkpoints" / "epoch3.pt").exists()
    assert not torch.equal(kept[1]["model"]["fc.weight"], kept[2]["model"]["fc.weight"])


def test_same_seed_same_metrics_other_seed_differs(tmp_path, fmnist_root):
    a = run(tiny(tmp_path, fmnist_root, name="a", epochs=2))
    b = run(tiny(tmp_path, fmnist_root, name="b", epochs=2))
    c = run(tiny(tmp_path, fmnist_root, name="c", epochs=2, seed=1))
    assert untimed(a.history) == untimed(b.history)
    assert untimed(a.history) != untimed(c.history)


class StopAfterEpoch:
    def __init__(self, epoch):
        self.epoch = epoch

    def on_epoch_end(self, trainer, record):
        if record["epoch"] == self.epoch:
            raise KeyboardInterrupt


def test_resume_after_epoch_equals_uninterrupted(tmp_path, fmnist_root, teacher_ckpt):
    kw = dict(method="kd", teacher="resnet8", teacher_checkpoint=str(teacher_ckpt))
    full = run(tiny(tmp_path, fmnist_root, name="full", **kw))
    cfg = tiny(tmp_path, fmnist_root, name="cut", **kw)
    with pytest.raises(KeyboardInterrupt):
        run(cfg, callbacks=[StopAfterEpoch(1)])
    assert read_checkpoint(tmp_path / "cut" / "checkpoints" / "last.pt")["epoch"] == 1
    resumed = run(cfg, resume=True)
    assert untimed(resumed.history) == untimed(full.history)
    for k, v in full.distiller.student.state_dict().items():
        assert torch.equal(v, resumed.distiller.student.state_dict()[k]), k


def test_cosine_and_warmup_schedule():
    cfg = make_config(dict(epochs=10, schedule="cosine", warmup_epochs=2, dataset="cifar10"))
    factors = [lr_factor(cfg, e) for e in range(10)]
    assert factors[:2] == [0.5, 1.0]
    assert factors[2] == 1.0 and factors[-1] < 0.05
    assert all(a >= b for a, b in zip(factors[2:], factors[3:], strict=False))
    step = make_config(dict(epochs=240, dataset="cifar10"))
    assert [lr_factor(step, e) for e in (0, 149, 150, 180, 210, 239)] == pytest.approx(
        [1, 1, 0.1, 0.01, 0.001, 0.001]
    )


def test_bf16_autocast_on_cpu_and_channels_last(tmp_path, fmnist_root, teacher_ckpt):
    """Training really runs under bf16 autocast in channels_last (the student's convolutions
    compute in bf16 on channels_last tensors, its weights stay fp32), and its loss trajectory
    follows the fp32 run of the same seed."""
    kd = dict(method="kd", teacher="resnet8", teacher_checkpoint=str(teacher_ckpt), epochs=2)
    cfg = tiny(tmp_path, fmnist_root, name="bf16", amp="bf16", channels_last=True, **kd)
    distiller, train_loader, test_loader, _, device, _ = build(cfg)
    seen = []

    def record(module, inputs, output):
        if module.training:
            seen.append((output.dtype, output.is_contiguous(memory_format=torch.channels_last)))

    distiller.student.conv1.register_forward_hook(record)
    bf16 = Trainer(distiller, train_loader, test_loader, cfg, device=device)
    bf16.fit()
    assert len(seen) == 2 * len(train_loader)  # every training step went through the hook
    assert set(seen) == {(torch.bfloat16, True)}
    assert all(p.dtype == torch.float32 for p in distiller.student.parameters())
    fp32 = run(tiny(tmp_path, fmnist_root, name="fp32", **kd))
    losses = [h["loss"] for h in bf16.history]
    assert losses == pytest.approx([h["loss"] for h in fp32.history], rel=0.05)


def test_gradient_clipping_covers_extra_groups(tmp_path, fmnist_root, teacher_ckpt):
    """FitNet's regressor (an extra parameter group) is clipped together with the student: the
    norm over every trainable parameter of the distiller stays under the bound."""
    cfg = tiny(
        tmp_path,
        fmnist_root,
        name="clip",
        method="fitnet",
        teacher="resnet8",
        teacher_checkpoint=str(teacher_ckpt),
        clip_grad_norm=1e-3,
        epochs=1,
    )
    distiller, train_loader, test_loader, _, _, _ = build(cfg)
    extra = distiller.extra_parameters()
    assert extra, "fitnet must have an extra group for this test to mean anything"
    trainable = [p for p in distiller.parameters() if p.requires_grad]
    clipped, norms = [], []
    real = torch.nn.utils.clip_grad_norm_

    def spy(params, max_norm, *a, **k):
        params = list(params)
        clipped.append({id(p) for p in params})
        total = real(params, max_norm, *a, **k)
        grads = [p.grad.norm() for p in trainable if p.grad is not None]
        norms.append(torch.norm(torch.stack(grads)).item())
        return total

    trainer = Trainer(distiller, train_loader, test_loader, cfg)
    torch.nn.utils.clip_grad_norm_ = spy
    try:
        trainer.fit()
    finally:
        torch.nn.utils.clip_grad_norm_ = real
    assert len(clipped) == len(train_loader)
    assert all({id(p) for p in extra} <= ids for ids in clipped)
    assert max(norms) <= 1e-3 * 1.001


def test_teacher_frozen_and_eval_throughout(tmp_path, fmnist_root, teacher_ckpt):
    cfg = tiny(
        tmp_path,
        fmnist_root,
        name="kd",
        method="kd",
        teacher="resnet8",
        teacher_checkpoint=str(teacher_ckpt),
        epochs=1,
    )
    distiller, train_loader, test_loader, _, _, _ = build(cfg)
    before = {k: v.clone() for k, v in distiller.teacher.state_dict().items()}
    modes = []
    distiller.teacher.register_forward_hook(lambda m, i, o: modes.append(m.training))
    Trainer(distiller, train_loader, test_loader, cfg).fit()
    assert modes and not any(modes)
    for k, v in distiller.teacher.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_missing_teacher_checkpoint_is_a_clear_error(tmp_path, fmnist_root):
    cfg = tiny(
        tmp_path,
        fmnist_root,
        method="kd",
        teacher="resnet8",
        teacher_checkpoint=str(tmp_path / "nope.pt"),
    )
    with pytest.raises(FileNotFoundError, match="teacher: checkpoint not found"):
        build(cfg)
    cfg = tiny(tmp_path, fmnist_root, method="kd", teacher="resnet8")
    with pytest.raises(FileNotFoundError, match="no checkpoint for resnet8"):
        build(cfg)


def test_compile_path_runs_on_cpu(tmp_path, fmnist_root):
    pytest.importorskip("torch._inductor")
    cfg = tiny(
        tmp_path,
        fmnist_root,
        name="compiled",
        compile=True,
        epochs=1,
        limit_train=64,
        limit_test=32,
    )
    trainer = run(cfg)
    assert torch.isfinite(torch.tensor(trainer.history[-1]["loss"]))
    assert "conv1.weight" in trainer.distiller.student.state_dict()  # names unchanged


@pytest.mark.slow
def test_ddp_two_processes_gloo_agree(tmp_path, fmnist_root, teacher_ckpt):
    # make sure the dataset is decompressed once before two processes race for it
    from dfpt_core.data import load_tensors

    load_tensors("fashion_mnist", True, root=fmnist_root, in_chans=1, limit=16)
    out = tmp_path / "ddp"
    config = tiny_yaml(
        tmp_path / "ddp.yaml",
        out,
        fmnist_root,
        name="ddp",
        method="kd",
        teacher="resnet8",
        teacher_checkpoint=str(teacher_ckpt),
        limit_test=64,
        epochs=2,
        milestones=[1],
    )
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(REPO / "tests" / "scripts" / "ddp_worker.py"),
        str(config),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert ranks[0]["student_sha256"] == ranks[1]["student_sha256"]
    assert untimed([ranks[0]["final"]]) == untimed([ranks[1]["final"]])
    assert ranks[0]["train_batches"] == 256 // 2 // 32  # each rank trains on its half
    assert (out / "ddp" / "metrics.json").is_file()  # only rank 0 writes records
    assert json.loads((out / "ddp" / "metrics.json").read_text())["world_size"] == 2


def test_student_checkpoint_finetunes_with_a_fresh_classifier(tmp_path):
    from dfpt_core.models import create_model, save_checkpoint
    from dfpt_core.run.weights import load_network

    source = create_model("resnet8", num_classes=100)
    save_checkpoint({"model": source.state_dict()}, tmp_path / "c100.pt")
    model = load_network("resnet8", str(tmp_path / "c100.pt"), 10, 3, "student", finetune=True)
    assert torch.equal(model.conv1.weight, source.conv1.weight)
    assert model.fc.weight.shape == (10, 64)  # re-initialised for the new number of classes
    with pytest.raises(Exception, match="fc.weight: checkpoint"):
        load_network("resnet8", str(tmp_path / "c100.pt"), 10, 3, "teacher")  # no finetune
    wide = create_model("resnet8x4", num_classes=10)
    save_checkpoint({"model": wide.state_dict()}, tmp_path / "wide.pt")
    with pytest.raises(Exception, match="conv1.weight"):  # only the classifier may change
        load_network("resnet8", str(tmp_path / "wide.pt"), 10, 3, "student", finetune=True)


def test_torchvision_weights_fill_a_tv_model(monkeypatch):
    from torchvision import models as tvm

    from dfpt_core.run.weights import load_network

    reference = tvm.resnet18(weights=None)
    monkeypatch.setattr(
        tvm.ResNet18_Weights.DEFAULT,
        "get_state_dict",
        lambda progress=False: reference.state_dict(),
        raising=False,
    )
    model = load_network("tv_resnet18", "torchvision", 1000, 3, "teacher", stem="imagenet")
    assert torch.equal(model.layer4[1].conv2.weight, reference.layer4[1].conv2.weight)
    with pytest.raises(ValueError, match="only for tv_"):
        load_network("resnet8", "torchvision", 10, 3, "teacher")


@pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only"
)
def test_kept_freed_memory_changes_no_number(tmp_path, fmnist_root, teacher_ckpt):
    """cpu_malloc=keep (the default: glibc keeps freed memory for the next step) and
    cpu_malloc=system train bit-identical weights and records; each run in a fresh process, as
    the setting is process-wide. It does not change the run's cache key either."""
    assert keep_freed_memory() is True
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    runs = {}
    for mode in CPU_MALLOC_MODES:
        values = dict(method="kd", teacher="resnet8", teacher_checkpoint=str(teacher_ckpt))
        config = tiny_yaml(tmp_path / f"{mode}.yaml", tmp_path, fmnist_root, name=mode,
                           epochs=2, cpu_malloc=mode, **values)  # fmt: skip
        cmd = [sys.executable, "-m", "dfpt_core.cli", "train", "--config", str(config)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        metrics = json.loads((tmp_path / mode / "metrics.json").read_text())
        weights = read_checkpoint(tmp_path / mode / "checkpoints" / "best.pt")["model"]
        runs[mode] = (untimed([metrics["final"]]), weights)
    (keep_history, keep), (system_history, system) = runs["keep"], runs["system"]
    assert keep_history == system_history
    assert keep.keys() == system.keys()
    assert all(torch.equal(keep[k], system[k]) for k in keep)
    key = {
        m: config_key(tiny_values(tmp_path, fmnist_root, cpu_malloc=m)) for m in CPU_MALLOC_MODES
    }
    assert key["keep"] == key["system"] == config_key(tiny_values(tmp_path, fmnist_root))


def test_the_trainer_keeps_freed_memory_on_the_cpu_unless_told(tmp_path, fmnist_root, monkeypatch):
    calls = []
    monkeypatch.setattr("dfpt_core.engine.trainer.keep_freed_memory", lambda: calls.append(1))
    for mode, expected in (("system", []), ("keep", [1])):
        cfg = tiny(tmp_path, fmnist_root, name=mode, cpu_malloc=mode, limit_train=32)
        distiller, train_loader, test_loader, *_ = build(cfg)
        Trainer(distiller, train_loader, test_loader, cfg, device="cpu")
        assert calls == expected, mode
    monkeypatch.setattr(platform, "system", lambda: "Darwin")
    assert keep_freed_memory() is False  # glibc's mallopt only
