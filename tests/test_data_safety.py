"""Data files are data: a crafted CIFAR pickle cannot run code, a damaged label file is refused
when the dataset is built (not mid-training), the test subset is the same for every seed, and the
validation split is the same for every run and held out of every training subset."""

from __future__ import annotations

import os
import pickle
from collections import Counter

import numpy as np
import pytest
import torch
from conftest import write_idx_gz
from torchvision import transforms as T

from dfpt_core import data


class Payload:
    """Unpickling this runs `os.system(command)` with a plain pickle.load."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def test_a_crafted_cifar_pickle_is_refused_and_its_payload_never_runs(cifar_root, tmp_path):
    marker = tmp_path / "payload-ran"
    batch = cifar_root / "cifar-10-batches-py" / "test_batch"
    batch.write_bytes(pickle.dumps({b"data": Payload(f"touch {marker}"), b"labels": [0]}))
    with pytest.raises(data.DatasetCorruptError, match="test_batch.*refused posix.system"):
        data.get_dataset("cifar10", train=False, root=cifar_root)
    assert not marker.exists()
    # the restricted reader still reads the real format (numpy arrays, bytes keys, lists)
    assert len(data.get_dataset("cifar10", train=True, root=cifar_root)) == 30


def test_a_label_outside_the_classes_is_refused_when_the_dataset_is_built(tiny_fmnist_system):
    labels = np.arange(30) % 10
    labels[7] = 12
    write_idx_gz(tiny_fmnist_system / "train-labels-idx1-ubyte.gz", labels)
    root = tiny_fmnist_system.parent / "root"
    with pytest.raises(data.DatasetCorruptError, match=r"train-labels-idx1-ubyte: label 12 at"):
        data.load_tensors("fashion_mnist", train=True, root=root)


def test_the_test_subset_does_not_depend_on_the_run_seed(cifar_root):
    def subset(train, seed):
        return data.load_tensors("cifar100", train, cifar_root, limit=50, seed=seed)[1]

    assert torch.equal(subset(False, 0), subset(False, 1))  # the same test images for all seeds
    assert not torch.equal(subset(True, 0), subset(True, 1))  # the training data varies
    test = data.get_dataset("cifar100", train=False, root=cifar_root, limit=50, seed=3)
    assert test.indices == data.stratified_indices(
        data.get_dataset("cifar100", train=False, root=cifar_root).targets,
        50,
        data.TEST_SUBSET_SEED,
    )


def test_the_validation_split_is_fixed_and_never_trained_on(cifar_root):
    full = data.get_dataset("cifar100", train=True, root=cifar_root)
    targets = torch.as_tensor(full.targets)
    held = data.split_indices(targets, True, None, 0, val_size=40, validation=True)
    assert held == data.stratified_indices(targets, 40, data.VAL_SUBSET_SEED)
    for seed in range(4):
        assert data.split_indices(targets, True, None, seed, 40, validation=True) == held
        train = data.split_indices(targets, True, 60, seed, val_size=40)
        assert len(train) == 60 == len(set(train)) and not set(train) & set(held)
        counts = Counter(targets[train].tolist())
        assert max(counts.values()) - min(counts.values()) <= 1  # stratified over the rest
    rest = data.split_indices(targets, True, None, 0, val_size=40)
    assert sorted(rest + held) == list(range(len(targets)))
    # without a validation split the training subset is what it always was (cached runs keep
    # their configuration keys and their data)
    assert data.split_indices(targets, True, 60, 3) == data.stratified_indices(targets, 60, 3)
    # the two loading paths give the same held-out images, un-augmented
    val = data.get_dataset("cifar100", False, cifar_root, val_size=40, validation=True)
    assert val.indices == held and not any(
        isinstance(t, T.RandomCrop) for t in val.dataset.transform.transforms
    )
    images, labels = data.load_tensors("cifar100", False, cifar_root, val_size=40, validation=True)
    assert labels.tolist() == targets[held].tolist()
    assert torch.equal(images, torch.from_numpy(full.data[held]).permute(0, 3, 1, 2))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(train=False, val_size=10, validation=True), "held out of the training split"),
        (dict(train=True, val_size=0, validation=True), "needs val_size > 0"),
        (dict(train=True, val_size=10_000, validation=False), "leaves no training images"),
    ],
)
def test_validation_split_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        data.split_indices(torch.arange(100) % 10, limit=None, seed=0, **kwargs)
