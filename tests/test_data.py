"""Tests of dfpt_core.data on tiny files in the real formats (and real Fashion-MNIST if present)."""

import pickle
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import CIFAR10_NAMES, write_idx_gz
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import functional as TF

from dfpt_core import data

CIFAR_FILES = {
    "cifar10": ("cifar-10-batches-py", "test_batch"),
    "cifar100": ("cifar-100-python", "test"),
}


def stack(dataset):
    images, targets = zip(*(dataset[i] for i in range(len(dataset))), strict=True)
    return torch.stack(images), torch.tensor(targets)


def raw_cifar(root, name, file):
    """(uint8 [N,32,32,3] images, labels) read straight from one pickle of the fixture."""
    with open(root / CIFAR_FILES[name][0] / file, "rb") as f:
        entry = pickle.load(f, encoding="bytes")
    labels = entry[b"labels"] if name == "cifar10" else entry[b"fine_labels"]
    return entry[b"data"].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def collect(loader):
    batches = list(loader)
    return torch.cat([x for x, _ in batches]), torch.cat([y for _, y in batches])


# --- registry, info, arguments ---------------------------------------------------------------


def test_list_and_info():
    assert data.list_datasets() == ["fashion_mnist", "cifar10", "cifar100", "cub200", "imagenet"]
    info = data.dataset_info("cifar10")
    assert (info.num_classes, info.image_size, info.classes) == (10, 32, tuple(CIFAR10_NAMES))
    assert info.mean == (0.4914, 0.4822, 0.4465) and info.std == (0.2023, 0.1994, 0.2010)
    assert data.dataset_info("cifar100").mean == (0.5071, 0.4865, 0.4409)
    assert data.dataset_info("fashion_mnist").normalization(1) == ((0.2860,), (0.3530,))
    assert data.dataset_info("fashion_mnist").normalization(3) == ((0.2860,) * 3, (0.3530,) * 3)
    assert data.dataset_info("cifar10").normalization(1) == ((0.4809,), (0.2004,))
    resident = {n for n in data.list_datasets() if data.dataset_info(n).tensor_resident}
    assert resident == {"fashion_mnist", "cifar10", "cifar100"}
    assert [data.dataset_info(n).num_classes for n in ("cub200", "imagenet")] == [200, 1000]
    with pytest.raises(Exception):  # noqa: B017 - frozen dataclass
        info.num_classes = 3


@pytest.mark.parametrize("call", [data.dataset_info, data.get_dataset, data.load_tensors])
def test_unknown_name_lists_known_ones(call):
    with pytest.raises(
        ValueError, match="unknown dataset 'mnist'.*fashion_mnist, cifar10, cifar100"
    ):
        call("mnist")


def test_bad_arguments(cifar_root):
    for in_chans in (0, 2, 4):
        with pytest.raises(ValueError, match="in_chans must be 1 or 3"):
            data.get_dataset("cifar10", root=cifar_root, in_chans=in_chans)
        with pytest.raises(ValueError, match="in_chans must be 1 or 3"):
            data.load_tensors("cifar10", root=cifar_root, in_chans=in_chans)
    with pytest.raises(ValueError, match="not tensor-resident"):
        data.load_tensors("cub200")
    with pytest.raises(ValueError, match="fast=True"):
        data.make_loader("imagenet", True, 8, fast=True)
    with pytest.raises(ValueError, match="limit must be a positive int"):
        data.get_dataset("cifar10", root=cifar_root, limit=0)


def test_default_root(cifar_root, monkeypatch):
    # the core never looks into the checkout: ./data unless DFPT_DATA_DIR says otherwise
    monkeypatch.delenv("DFPT_DATA_DIR", raising=False)
    assert data.resolve_root() == Path("data")
    assert data.resolve_root("~/x") == Path.home() / "x"
    monkeypatch.setenv("DFPT_DATA_DIR", str(cifar_root))
    assert data.resolve_root() == cifar_root
    assert len(data.get_dataset("cifar10", train=False)) == 20  # found via the variable


# --- CIFAR ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_splits_labels_and_test_transform(cifar_root, name):
    train = data.get_dataset(name, train=True, root=cifar_root)
    test = data.get_dataset(name, train=False, root=cifar_root)
    num_classes = data.dataset_info(name).num_classes
    assert (len(train), len(test)) == ((30, 20) if name == "cifar10" else (200, 100))
    assert train.targets == [i % num_classes for i in range(len(train))]
    assert len(train.classes) == num_classes
    assert train.classes[:2] == (CIFAR10_NAMES[:2] if name == "cifar10" else ["fine_00", "fine_01"])
    raw, labels = raw_cifar(cifar_root, name, CIFAR_FILES[name][1])
    assert test.targets == labels and np.array_equal(test.data, raw)
    mean, std = data.dataset_info(name).normalization(3)
    expected = T.Normalize(mean, std)(torch.from_numpy(raw).permute(0, 3, 1, 2).float() / 255)
    images, targets = stack(test)
    assert images.shape == (len(test), 3, 32, 32) and images.dtype == torch.float32
    torch.testing.assert_close(images, expected, atol=1e-5, rtol=0)
    assert targets.tolist() == labels


def test_cifar_train_transform_augments(cifar_root):
    ds = data.get_dataset("cifar10", root=cifar_root)
    steps = ds.transform.transforms
    assert [type(t) for t in steps] == [
        T.RandomCrop,
        T.RandomHorizontalFlip,
        T.ToTensor,
        T.Normalize,
    ]
    assert steps[0].size == (32, 32) and steps[0].padding == 4
    torch.manual_seed(0)
    views = torch.stack([ds[0][0] for _ in range(8)])
    assert views.shape == (8, 3, 32, 32) and len({v.sum().item() for v in views}) > 1


def test_cifar_grayscale(cifar_root):
    test = data.get_dataset("cifar10", train=False, root=cifar_root, in_chans=1)
    image, _ = test[3]
    assert image.shape == (1, 32, 32)
    gray = np.asarray(Image.fromarray(test.data[3]).convert("L"), dtype=np.float32) / 255
    torch.testing.assert_close(image[0], (torch.from_numpy(gray) - 0.4809) / 0.2004)


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_missing(tmp_path, name):
    with pytest.raises(data.DatasetNotFoundError) as err:
        data.get_dataset(name, root=tmp_path)
    assert isinstance(err.value, FileNotFoundError)
    msg = str(err.value)
    assert str(tmp_path / CIFAR_FILES[name][0]) in msg and "download=True" in msg
    assert ("cifar-10-python.tar.gz" if name == "cifar10" else "cifar-100-python.tar.gz") in msg


def test_cifar_corrupt_files_are_named(cifar_root):
    folder = cifar_root / "cifar-10-batches-py"
    (folder / "data_batch_3").write_bytes(b"\x80\x02}q\x00(garbage")
    with pytest.raises(data.DatasetCorruptError, match="data_batch_3"):
        data.get_dataset("cifar10", root=cifar_root)
    assert len(data.get_dataset("cifar10", train=False, root=cifar_root)) == 20  # test split fine
    with open(folder / "data_batch_3", "wb") as f:
        pickle.dump({b"labels": [0]}, f)  # a pickle, but no images
    with pytest.raises(data.DatasetCorruptError, match="data_batch_3.*not a CIFAR-10 batch"):
        data.get_dataset("cifar10", root=cifar_root)
    (folder / "batches.meta").write_bytes(b"")
    with pytest.raises(data.DatasetCorruptError, match="batches.meta"):
        data.get_dataset("cifar10", train=False, root=cifar_root)


def test_cifar_download_is_passed_through(cifar_root, monkeypatch):
    calls = []
    monkeypatch.setattr(data.CIFAR100, "download", lambda self: calls.append(self.root))
    data.get_dataset("cifar100", root=cifar_root)
    assert calls == []
    data.get_dataset("cifar100", root=cifar_root, download=True)
    assert [Path(root) for root in calls] == [cifar_root]


# --- CUB-200-2011 and ImageNet ----------------------------------------------------------------


def test_cub200(cub_root):
    train = data.get_dataset("cub200", train=True, root=cub_root)
    test = data.get_dataset("cub200", train=False, root=cub_root, in_chans=1)
    assert train.classes == ["Black_footed_Albatross", "Laysan_Albatross", "Sooty_Albatross"]
    assert (train.targets, test.targets) == ([0, 0, 1, 1, 2, 2], [0, 0, 1, 1, 2, 2])
    assert [Path(p).name for p, _ in test.samples[:2]] == [
        "Black_footed_Albatross_2.jpg",
        "Black_footed_Albatross_3.jpg",
    ]
    image, target = train[4]
    assert image.shape == (3, 224, 224) and target == 2
    assert [type(t) for t in test.transform.transforms[:3]] == [T.Resize, T.CenterCrop, T.Grayscale]
    gray, _ = test[0]
    assert gray.shape == (1, 224, 224)
    assert torch.equal(gray, test[0][0])  # the test transform is deterministic


def test_cub200_missing_and_corrupt(cub_root, tmp_path_factory):
    empty = tmp_path_factory.mktemp("empty")
    with pytest.raises(
        data.DatasetNotFoundError, match="missing images.txt.*CUB_200_2011.*extract"
    ):
        data.get_dataset("cub200", root=empty)
    labels = cub_root / "CUB_200_2011" / "image_class_labels.txt"
    labels.write_text(labels.read_text().replace("5 2\n", "5\n"))
    with pytest.raises(data.DatasetCorruptError, match="image_class_labels.txt, line 5"):
        data.get_dataset("cub200", root=cub_root)
    labels.write_text(labels.read_text().replace("5\n", "5 7\n"))
    with pytest.raises(data.DatasetCorruptError, match="image 5 has split 1, label 7"):
        data.get_dataset("cub200", root=cub_root)


def test_imagenet(imagenet_root, tmp_path_factory):
    train = data.get_dataset("imagenet", train=True, root=imagenet_root)
    val = data.get_dataset("imagenet", train=False, root=imagenet_root)
    assert train.classes == ["n01440764", "n01443537"] and train.targets == [0, 0, 0, 1, 1, 1]
    assert val.targets == [0, 1]
    assert train[0][0].shape == (3, 224, 224) and val[1][0].shape == (3, 224, 224)
    assert [type(t) for t in train.transform.transforms[:2]] == [
        T.RandomResizedCrop,
        T.RandomHorizontalFlip,
    ]
    empty = tmp_path_factory.mktemp("empty")
    with pytest.raises(data.DatasetNotFoundError) as err:
        data.get_dataset("imagenet", train=False, root=empty)
    assert str(empty / "imagenet" / "val") in str(err.value) and "<wnid>" in str(err.value)


# --- Fashion-MNIST -------------------------------------------------------------------------------


def test_fashion_mnist_resolution_and_cache(tiny_fmnist_system, tmp_path, monkeypatch):
    root = tmp_path / "root"
    ds = data.get_dataset("fashion_mnist", train=False, root=root)
    raw = root / "FashionMNIST" / "raw"
    assert sorted(p.name for p in raw.iterdir()) == [  # decompressed, no temp files left
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
    ]
    assert len(ds) == 20 and ds.targets.tolist() == [i % 10 for i in range(20)]
    image, _ = ds[0]
    assert image.shape == (3, 32, 32) and torch.equal(image[0], image[2])
    torch.testing.assert_close(image[:, :2], torch.full((3, 2, 32), -0.2860 / 0.3530))  # border
    # Now served from the cache alone.
    monkeypatch.setattr(data, "FASHION_MNIST_SYSTEM_DIR", tmp_path / "nowhere")
    images, targets = data.load_tensors("fashion_mnist", train=True, root=root, in_chans=1)
    assert images.shape == (30, 1, 32, 32) and targets.tolist() == [i % 10 for i in range(30)]
    with pytest.raises(data.DatasetNotFoundError) as err:
        data.get_dataset("fashion_mnist", root=tmp_path / "other")
    msg = str(err.value)
    assert "apt-get install dataset-fashion-mnist" in msg and "download=True" in msg
    assert str(tmp_path / "nowhere") in msg and str(tmp_path / "other") in msg


def test_fashion_mnist_corrupt_files_are_named(tiny_fmnist_system, tmp_path):
    (tiny_fmnist_system / "t10k-labels-idx1-ubyte.gz").write_bytes(b"not gzip")
    with pytest.raises(data.DatasetCorruptError, match="t10k-labels-idx1-ubyte.gz"):
        data.get_dataset("fashion_mnist", root=tmp_path / "a")
    write_idx_gz(tiny_fmnist_system / "t10k-labels-idx1-ubyte.gz", np.zeros(7))  # 7 labels
    with pytest.raises(data.DatasetCorruptError, match="20 t10k images but 7 labels"):
        data.get_dataset("fashion_mnist", train=False, root=tmp_path / "b")
    (tmp_path / "b" / "FashionMNIST" / "raw" / "train-images-idx3-ubyte").write_bytes(b"\0" * 9)
    with pytest.raises(data.DatasetCorruptError, match="train-images-idx3-ubyte"):
        data.get_dataset("fashion_mnist", train=True, root=tmp_path / "b")


def test_fashion_mnist_real(fmnist_root):
    train = data.get_dataset("fashion_mnist", train=True, root=fmnist_root, in_chans=1)
    test = data.get_dataset("fashion_mnist", train=False, root=fmnist_root)
    assert (len(train), len(test)) == (60000, 10000)
    assert train.classes == list(data.dataset_info("fashion_mnist").classes)
    assert sorted(Counter(test.targets.tolist()).values()) == [1000] * 10
    assert train[0][0].shape == (1, 32, 32) and test[0][0].shape == (3, 32, 32)
    images, targets = data.load_tensors("fashion_mnist", train=False, root=fmnist_root)
    assert images.shape == (10000, 3, 32, 32) and images.dtype == torch.uint8
    assert torch.equal(targets, test.targets) and targets.dtype == torch.int64
    assert torch.equal(images[:, 0, 2:30, 2:30], test.data) and torch.equal(
        images[:, 1], images[:, 0]
    )
    border = torch.ones(32, 32, dtype=torch.bool)
    border[2:30, 2:30] = False
    assert images[:, :, border].max() == 0 and images.float().mean() > 50
    cached = fmnist_root / "FashionMNIST" / "raw" / "train-images-idx3-ubyte"
    assert cached.stat().st_size == 16 + 60000 * 28 * 28


def test_fashion_mnist_real_loader_matches_dataset(fmnist_root):
    for in_chans in (1, 3):
        kw = dict(root=fmnist_root, in_chans=in_chans, limit=100, seed=3)
        loader = data.make_loader("fashion_mnist", False, 64, **kw)
        ref = data.get_dataset("fashion_mnist", False, **kw)
        images, targets = collect(loader)
        ref_images, ref_targets = stack(ref)
        assert images.shape == (100, in_chans, 32, 32) and torch.equal(targets, ref_targets)
        torch.testing.assert_close(images, ref_images, atol=1e-6, rtol=0)


# --- limit ---------------------------------------------------------------------------------------


def test_stratified_indices():
    targets = torch.tensor([0] * 50 + [1] * 3 + [2] * 20 + [3] * 40)
    idx = data.stratified_indices(targets, 30, seed=0)
    counts = Counter(targets[idx].tolist())
    assert len(idx) == 30 == len(set(idx)) and idx == sorted(idx)
    assert counts[1] == 3 and max(counts.values()) - min(counts[c] for c in (0, 2, 3)) <= 1
    assert data.stratified_indices(targets.tolist(), 30, seed=0) == idx  # list input, same seed
    assert data.stratified_indices(targets, 30, seed=1) != idx
    assert data.stratified_indices(targets, 200) == list(range(len(targets)))
    counts = Counter(targets[data.stratified_indices(targets, 13, seed=5)].tolist())
    assert counts == {1: 3, 2: 3, 3: 3, 0: 4}  # water-filling from the smallest class up
    equal = torch.arange(40) % 4
    extra = set()  # with equal classes, the seed picks the class that gets the extra sample
    for seed in range(12):
        counts = Counter(equal[data.stratified_indices(equal, 13, seed=seed)].tolist())
        assert sorted(counts.values()) == [3, 3, 3, 4]
        extra.add(max(counts, key=counts.get))
    assert len(extra) > 1


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_limit_same_subset_in_both_paths(cifar_root, name):
    full = data.get_dataset(name, train=True, root=cifar_root)
    sub = data.get_dataset(name, train=True, root=cifar_root, limit=25, seed=7)
    assert isinstance(sub, torch.utils.data.Subset) and len(sub) == 25
    assert sub.indices == data.stratified_indices(full.targets, 25, seed=7)
    assert sub.targets == [full.targets[i] for i in sub.indices] and sub.classes == full.classes
    assert max(Counter(sub.targets).values()) - min(Counter(sub.targets).values()) <= 1
    assert data.get_dataset(name, root=cifar_root, limit=25, seed=8).indices != sub.indices
    images, targets = data.load_tensors(name, train=True, root=cifar_root, limit=25, seed=7)
    assert targets.tolist() == sub.targets
    assert torch.equal(images, torch.from_numpy(full.data[sub.indices]).permute(0, 3, 1, 2))


# --- TensorLoader --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, in_chans, limit",
    [
        ("cifar10", 3, None),
        ("cifar10", 1, None),
        ("cifar100", 3, 30),
        ("fashion_mnist", 1, None),
        ("fashion_mnist", 3, 15),
    ],
)
def test_tensor_loader_matches_torchvision_path(
    cifar_root, tiny_fmnist_system, name, in_chans, limit
):
    kw = dict(root=cifar_root, in_chans=in_chans, limit=limit, seed=2)
    loader = data.make_loader(name, False, 7, **kw)
    assert isinstance(loader, data.TensorLoader)
    images, targets = collect(loader)
    ref_images, ref_targets = stack(data.get_dataset(name, train=False, **kw))
    assert images.dtype == torch.float32 and targets.dtype == torch.int64
    assert images.shape == ref_images.shape == (len(ref_targets), in_chans, 32, 32)
    assert torch.equal(targets, ref_targets)
    torch.testing.assert_close(images, ref_images, atol=1e-6, rtol=0)
    # a fixed probe batch: the first images of the same subset, normalised alike
    fixed_images, fixed_targets = data.fixed_batch(name, 5, train=False, **kw)
    assert torch.equal(fixed_targets, ref_targets[:5])
    torch.testing.assert_close(fixed_images, ref_images[:5], atol=1e-6, rtol=0)


def make_tensor_loader(n=40, **kw):
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    args = dict(batch_size=8, mean=(0.5,) * 3, std=(0.25,) * 3, augment=True, shuffle=True)
    return data.TensorLoader(images, torch.arange(n), **{**args, **kw})


def test_tensor_loader_is_a_function_of_seed_and_epoch():
    loader = make_tensor_loader(seed=1)
    loader.set_epoch(3)
    torch.manual_seed(0)
    first = collect(loader)
    torch.manual_seed(123)  # the global RNG plays no part
    again = collect(loader)
    resumed = make_tensor_loader(seed=1)
    resumed.set_epoch(3)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert all(torch.equal(a, b) for a, b in zip(first, collect(resumed), strict=True))
    loader.set_epoch(4)
    other_epoch = collect(loader)
    assert not torch.equal(first[1], other_epoch[1])  # another order
    assert sorted(other_epoch[1].tolist()) == list(range(40))  # still a permutation
    other_seed = make_tensor_loader(seed=2)
    other_seed.set_epoch(3)
    assert not torch.equal(first[0], collect(other_seed)[0])


def test_tensor_loader_len_shapes_and_layout():
    assert len(make_tensor_loader(drop_last=False)) == 5
    loader = make_tensor_loader(n=43, drop_last=False, channels_last=True)
    sizes = [len(y) for _, y in loader]
    assert len(loader) == 6 and sizes == [8, 8, 8, 8, 8, 3]
    x, _ = next(iter(loader))
    assert x.is_contiguous(memory_format=torch.channels_last) and x.shape == (8, 3, 32, 32)
    loader = make_tensor_loader(n=43, drop_last=True)
    assert len(loader) == 5 == len(list(loader))
    plain = make_tensor_loader(n=16, shuffle=False, augment=False)
    x, y = next(iter(plain))
    assert y.tolist() == list(range(8))
    torch.testing.assert_close(x, (plain.images[:8].float() / 255 - 0.5) / 0.25)
    with pytest.raises(ValueError, match="uint8"):
        data.TensorLoader(torch.zeros(4, 3, 32, 32), torch.arange(4), 2, (0,) * 3, (1,) * 3)
    with pytest.raises(ValueError, match="mean/std"):
        make_tensor_loader(mean=(0.5,))


def test_tensor_loader_ddp_shards():
    single = make_tensor_loader(n=41, seed=5, drop_last=False)
    ranks = [
        make_tensor_loader(n=41, seed=5, drop_last=False, rank=r, world_size=2) for r in (0, 1)
    ]
    for loader in (single, *ranks):
        loader.set_epoch(2)
    shards = [collect(loader) for loader in ranks]
    ids = [set(y.tolist()) for _, y in shards]
    assert len(ranks[0]) == len(ranks[1]) == 3
    assert [len(y) for _, y in shards] == [20, 20] and not ids[0] & ids[1]
    images, targets = collect(single)
    assert ids[0] | ids[1] == set(targets[:40].tolist())  # one sample left out, the same one
    # Each sample gets the very same augmentation as in the single-process epoch.
    by_id = {int(t): x for x, t in zip(images, targets, strict=True)}
    for x_rank, y_rank in shards:
        assert all(torch.equal(x, by_id[int(t)]) for x, t in zip(x_rank, y_rank, strict=True))
    ranks[0].set_epoch(3)
    assert set(collect(ranks[0])[1].tolist()) != ids[0]


def marker_images(k):
    """k images whose channels encode (row + 1, column + 1, image id + 1)."""
    grid = torch.arange(1, 33)
    base = torch.stack([grid[:, None].expand(32, 32), grid[None, :].expand(32, 32)])
    images = [torch.cat([base, torch.full((1, 32, 32), i + 1)]) for i in range(k)]
    return torch.stack(images).to(torch.uint8)


def decode(image):
    """(top, left, flipped) of a marker crop [3,32,32] (values as integers)."""
    flipped = bool(image[1, 16, 17] < image[1, 16, 16])
    return int(image[0, 16, 16]) - 13, int(image[1, 16, 16]) - 13 + flipped, flipped


def test_augmentation_matches_torchvision_random_crop_and_flip():
    n = 8100
    markers = marker_images(4)
    images, targets = markers.repeat(n // 4, 1, 1, 1), torch.arange(4).repeat(n // 4)
    identity = (0.0,) * 3, (1 / 255,) * 3  # output = the uint8 values
    loader = data.TensorLoader(images, targets, 1024, *identity, augment=True, shuffle=True)
    images, targets = collect(loader)
    images = images.round().to(torch.uint8)
    ours = [decode(x) for x in images]
    assert torch.equal(images[:, 2, 16, 16].long(), targets + 1)  # image and label stay paired
    # Every crop is exactly torchvision's crop of the zero-padded image at the decoded offsets.
    for x, t, (top, left, flipped) in list(zip(images, targets, ours, strict=True))[:300]:
        ref = TF.crop(TF.pad(markers[t], [4]), top, left, 32, 32)
        assert torch.equal(x, TF.hflip(ref) if flipped else ref)
    torch.manual_seed(0)
    augment = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip()])
    pil = Image.fromarray(markers[0].permute(1, 2, 0).numpy())
    theirs = [decode(torch.from_numpy(np.array(augment(pil))).permute(2, 0, 1)) for _ in range(n)]
    cells = [(t, l) for t in range(9) for l in range(9)]
    freq = {}
    for label, draws in (("ours", ours), ("torchvision", theirs)):
        counts = Counter((top, left) for top, left, _ in draws)
        assert set(counts) == set(cells), label  # the 9x9 offsets, nothing else
        chi2 = sum((counts[c] - n / 81) ** 2 / (n / 81) for c in cells)
        assert chi2 < 130, (label, chi2)  # df = 80; uniform
        assert abs(sum(f for *_, f in draws) / n - 0.5) < 0.02, label
        freq[label] = np.array([counts[c] / n for c in cells])
    assert 0.5 * np.abs(freq["ours"] - freq["torchvision"]).sum() < 0.1  # total variation


# --- make_loader -------------------------------------------------------------------------------


def test_make_loader_kinds(cifar_root, cub_root):
    fast = data.make_loader("cifar10", True, 8, root=cifar_root)
    assert isinstance(fast, data.TensorLoader) and fast.augment and fast.shuffle
    assert len(fast) == 3  # 30 samples, drop_last defaults to train
    slow = data.make_loader("cifar10", True, 8, root=cifar_root, fast=False, seed=4)
    assert isinstance(slow, data.EpochDataLoader) and len(slow) == 3
    slow.set_epoch(1)
    order = collect(slow)[1]
    slow.set_epoch(2)
    other = collect(slow)[1]
    slow.set_epoch(1)
    assert torch.equal(collect(slow)[1], order) and not torch.equal(order, other)
    test = data.make_loader("cifar10", False, 8, root=cifar_root, fast=False, channels_last=True)
    x, y = next(iter(test))
    assert len(test) == 3 and x.shape == (8, 3, 32, 32) and y.dtype == torch.int64
    assert x.is_contiguous(memory_format=torch.channels_last)
    cub = data.make_loader("cub200", False, 4, root=cub_root)
    x, y = collect(cub)
    assert isinstance(cub, data.EpochDataLoader) and x.shape == (6, 3, 224, 224)
    assert y.tolist() == [0, 0, 1, 1, 2, 2]


def test_make_loader_ddp_dataloader_path(cifar_root):
    kw = dict(root=cifar_root, fast=False, world_size=2, seed=1)
    loaders = [data.make_loader("cifar10", True, 5, rank=r, **kw) for r in (0, 1)]
    for loader in loaders:
        assert isinstance(loader.loader.sampler, torch.utils.data.DistributedSampler)
        loader.set_epoch(1)
    shards = [list(loader.loader.sampler) for loader in loaders]
    assert [len(loader) for loader in loaders] == [3, 3] and [len(s) for s in shards] == [15, 15]
    assert sorted(shards[0] + shards[1]) == list(range(30))
    loaders[0].set_epoch(2)
    assert list(loaders[0].loader.sampler) != shards[0]
