"""Shared data fixtures: tiny datasets written in the real on-disk formats."""

import contextlib
import gzip
import os
import pickle
import struct
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from torchvision.datasets import FashionMNIST

from dfpt_core import data

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer"]
CIFAR10_NAMES += ["dog", "frog", "horse", "ship", "truck"]


def _dump(path, obj):
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def _batch(rng, labels, label_key):
    n = len(labels)
    return {
        b"batch_label": b"fixture",
        label_key: labels,
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),  # R, G, B planes per row
        b"filenames": [f"img_{i}.png".encode() for i in range(n)],
    }


@pytest.fixture
def cifar_root(tmp_path):
    """A root with cifar-10-batches-py (5 x 6 train, 20 test images) and cifar-100-python
    (200 train, 100 test), pickled like the official files; labels cycle through the classes."""
    rng = np.random.default_rng(0)
    c10 = tmp_path / "cifar-10-batches-py"
    c10.mkdir()
    for b in range(5):
        labels = [(6 * b + i) % 10 for i in range(6)]
        _dump(c10 / f"data_batch_{b + 1}", _batch(rng, labels, b"labels"))
    _dump(c10 / "test_batch", _batch(rng, [i % 10 for i in range(20)], b"labels"))
    names = [n.encode() for n in CIFAR10_NAMES]
    _dump(c10 / "batches.meta", {b"label_names": names, b"num_cases_per_batch": 6})
    c100 = tmp_path / "cifar-100-python"
    c100.mkdir()
    _dump(c100 / "train", _batch(rng, [i % 100 for i in range(200)], b"fine_labels"))
    _dump(c100 / "test", _batch(rng, [i % 100 for i in range(100)], b"fine_labels"))
    fine = [f"fine_{i:02d}".encode() for i in range(100)]
    _dump(c100 / "meta", {b"fine_label_names": fine, b"coarse_label_names": [b"coarse"] * 20})
    return tmp_path


def _jpeg(path, color):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (48, 40), color).save(path, "JPEG")


@pytest.fixture
def cub_root(tmp_path):
    """CUB_200_2011 with 3 classes x 4 JPEGs; per class images 1-2 train, 3-4 test."""
    folder = tmp_path / "CUB_200_2011"
    classes = ["001.Black_footed_Albatross", "002.Laysan_Albatross", "003.Sooty_Albatross"]
    images, split, labels = [], [], []
    for c, cls in enumerate(classes):
        for k in range(4):
            image_id = 4 * c + k + 1
            rel = f"{cls}/{cls.split('.')[1]}_{k}.jpg"
            _jpeg(folder / "images" / rel, (80 * c, 40, 200 - 60 * c))
            images.append(f"{image_id} {rel}")
            split.append(f"{image_id} {int(k < 2)}")
            labels.append(f"{image_id} {c + 1}")
    for name, rows in [
        ("images.txt", images),
        ("train_test_split.txt", split),
        ("image_class_labels.txt", labels),
        ("classes.txt", [f"{c + 1} {cls}" for c, cls in enumerate(classes)]),
    ]:
        (folder / name).write_text("\n".join(rows) + "\n")
    return tmp_path


@pytest.fixture
def imagenet_root(tmp_path):
    """imagenet/{train,val}/<wnid>/*.JPEG with 2 classes (3 train, 1 val image each)."""
    for c, wnid in enumerate(["n01440764", "n01443537"]):
        for split, n in [("train", 3), ("val", 1)]:
            for k in range(n):
                _jpeg(tmp_path / "imagenet" / split / wnid / f"{wnid}_{k}.JPEG", (100 * c, 50, 9))
    return tmp_path


def write_idx_gz(path, array):
    """A gzipped idx file (MNIST format: magic 0x0800 | ndim, big-endian sizes, uint8 data)."""
    header = struct.pack(">I", 0x0800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def tiny_fmnist_system(tmp_path, monkeypatch):
    """A stand-in for the Debian package folder with 30 train / 20 test 28x28 images."""
    folder = tmp_path / "system-fashion-mnist"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for split, n in [("train", 30), ("t10k", 20)]:
        write_idx_gz(folder / f"{split}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        write_idx_gz(folder / f"{split}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    monkeypatch.setattr(data, "FASHION_MNIST_SYSTEM_DIR", folder)
    return folder


def real_data_required() -> bool:
    """Under `make test` (DFPT_REQUIRE_DATA=1) and in CI a missing dataset fails the tests that
    need it; a plain `pytest` elsewhere skips them, with the reason."""
    return bool(os.environ.get("DFPT_REQUIRE_DATA") or os.environ.get("CI"))


@pytest.fixture(scope="session")
def fmnist_root(tmp_path_factory):
    """A root holding the real Fashion-MNIST: an empty one into which the Debian package's files
    are decompressed once per session, else the data folder when torchvision's download is
    there (`make data` provides one or the other)."""
    files = [Path(f).stem for f, _ in FashionMNIST.resources]
    if all((data.FASHION_MNIST_SYSTEM_DIR / f"{f}.gz").is_file() for f in files):
        return tmp_path_factory.mktemp("fmnist")
    cached = data.resolve_root()
    if all((cached / "FashionMNIST" / "raw" / f).is_file() for f in files):
        return cached
    reason = (
        f"real Fashion-MNIST absent (neither {data.FASHION_MNIST_SYSTEM_DIR} nor "
        f"{cached}/FashionMNIST/raw): `make data` provides it"
    )
    if real_data_required():
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def fmnist_tensors(fmnist_root):
    """Real Fashion-MNIST as the trainer sees it at test time, in memory: (train images, train
    targets, test images, test targets), 2048 / 1000 class-stratified images, 1 x 32 x 32,
    normalised. Shared read-only."""
    mean, std = data.dataset_info("fashion_mnist").normalization(1)
    splits = []
    for train, limit in ((True, 2048), (False, 1000)):
        images, targets = data.load_tensors(
            "fashion_mnist", train, fmnist_root, in_chans=1, limit=limit
        )
        splits += [images.float().div(255).sub(mean[0]).div(std[0]), targets]
    return tuple(splits)


def batches(x, y, batch_size: int = 32, seed: int = 0):
    """Endless shuffled mini-batches of (x, y) (a fresh permutation per pass, from its own
    generator)."""
    g = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(len(x), generator=g)
        for i in range(0, len(x) - batch_size + 1, batch_size):
            idx = order[i : i + batch_size]
            yield x[idx], y[idx]


@torch.no_grad()
def predict(model, images, batch_size: int = 128):
    """`model`'s outputs on `images` in eval mode, `batch_size` images at a time (one batch of a
    thousand 32x32 images runs several times slower on a CPU than eight of 128)."""
    model.eval()
    return torch.cat([model(images[i : i + batch_size]) for i in range(0, len(images), batch_size)])


def shipped_checkpoint(arch: str, epoch: int | None = None) -> Path:
    """A checkpoint of the cpu teacher `arch` shipped in data/runs/cpu (`shipped_teacher`)."""
    from dfpt_core.workbook.cache import shipped_teacher

    return shipped_teacher(arch, epoch)


def load_shipped(arch: str, epoch: int | None = None) -> torch.nn.Module:
    """The shipped network `arch` (best, or kept after `epoch`), held as every teacher is: eval
    mode, no gradients."""
    from dfpt_core.methods.base import freeze
    from dfpt_core.run.weights import load_network

    return freeze(load_network(arch, str(shipped_checkpoint(arch, epoch)), 10, 1, "teacher"))


@pytest.fixture(scope="session")
def shipped_teacher():
    """The suite's trained teacher: the shipped cpu resnet20 (15 epochs on 5000 images; its
    test accuracy in the manifest), loaded once and frozen: `model` (best.pt), `route` (the
    checkpoints its training kept after epochs 4, 8 and 11, frozen too: ESKD's early-stopped
    teacher, RCO's anchors), `arch`, `checkpoint` (the best.pt path, for configs) and `entry`
    (its manifest record). Never trained by a test: wrap it, or deep-copy it."""
    from dfpt_core.workbook.cache import shipped_manifest

    arch = "resnet20"
    checkpoint = shipped_checkpoint(arch)
    return SimpleNamespace(
        arch=arch,
        model=load_shipped(arch),
        route={epoch: load_shipped(arch, epoch) for epoch in (4, 8, 11)},
        checkpoint=checkpoint,
        entry=shipped_manifest()["runs"][checkpoint.parent.parent.name],
    )


def tiny_values(out_dir, data_root, **values) -> dict:
    """The suite's tiny training run, as the mapping a config file holds: resnet8 (ce) on 256
    real Fashion-MNIST images (1 channel), 128 test images, 3 epochs of batch 32, lr x0.1 from
    epoch 2, on the CPU, into `out_dir`/run; `values` override or add any key."""
    base = dict(
        name="run",
        method="ce",
        student="resnet8",
        dataset="fashion_mnist",
        data_root=str(data_root),
        in_chans=1,
        limit_train=256,
        limit_test=128,
        epochs=3,
        batch_size=32,
        eval_batch_size=128,
        lr=0.05,
        milestones=[2],
        out_dir=str(out_dir),
        progress=False,
        device="cpu",
    )
    return {**base, **values}


def tiny_config(out_dir, data_root, **values):
    """`tiny_values` as a validated TrainConfig."""
    from dfpt_core.run.config import make_config

    return make_config(tiny_values(out_dir, data_root, **values))


def tiny_yaml(path, out_dir, data_root, **values) -> Path:
    """`tiny_values` written to the YAML file `path` (for `dfpt train --config`); returns it."""
    path = Path(path)
    path.write_text(yaml.safe_dump(tiny_values(out_dir, data_root, **values)))
    return path


def untimed(history):
    """Epoch records without their wall-clock times (which differ between identical runs)."""
    return [{k: v for k, v in rec.items() if k != "seconds"} for rec in history]


@contextlib.contextmanager
def torch_threads(n: int):
    """torch on `n` intra-op threads inside the block, the previous count restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """The suite's one thread pin: every test and fixture runs torch on one intra-op thread.
    A run's numbers depend on the thread count, so runs compared within a test (or with a module
    fixture's run) must share it; and the suite's tensors are small (batches of at most 32
    images of at most 32x32): on a 2-core machine shared with other processes, a second
    OpenMP thread made a tiny training run 15-25x slower (measured: 2 s on one thread against
    28-52 s on two), on an idle one it gains little. Subprocesses get OMP_NUM_THREADS=1."""
    with torch_threads(1):
        yield
