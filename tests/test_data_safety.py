"""Data files are data: a crafted CIFAR pickle cannot run code, a damaged label file is refused
when the dataset is built (not mid-training), and the test subset is the same for every seed."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch
from conftest import write_idx_gz

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
