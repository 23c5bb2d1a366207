"""Data pipeline throughput (images/s) with the training augmentation (RandomCrop(32, padding=4),
horizontal flip, to float, normalise) on 32x32 RGB uint8 images (Fashion-MNIST, zero-padded to
32x32, gray replicated to 3 channels): the fast TensorLoader (batched on tensors) against
torchvision's per-sample PIL pipeline in a DataLoader, both in this process (no workers), passes
interleaved, median pass."""

import itertools
import statistics

import torch
from _common import BATCH, interleaved_seconds, parse_args, write
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T

from dfpt_core.data import TensorLoader, dataset_info, load_tensors


class PILImages(Dataset):
    """uint8 [N,C,H,W] images served one at a time as PIL images through `transform` (the way
    torchvision's CIFAR datasets serve theirs)."""

    def __init__(self, images: torch.Tensor, targets: torch.Tensor, transform):
        self.images = images.permute(0, 2, 3, 1).numpy()
        self.targets, self.transform = targets.tolist(), transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.transform(Image.fromarray(self.images[i])), self.targets[i]


def one_pass(loader):
    """A function iterating `loader` once (a new shuffle and augmentation each call)."""
    epochs = itertools.count()

    def run() -> None:
        if isinstance(loader, TensorLoader):
            loader.set_epoch(next(epochs))
        for _ in loader:
            pass

    return run


def main():
    args = parse_args(__doc__)
    settings = {"images": 1024 if args.quick else 10240, "batch": BATCH, "num_workers": 0}
    settings.update(warmup=1, rounds=2 if args.quick else 5)
    images, targets = load_tensors("fashion_mnist", in_chans=3, limit=settings["images"])
    mean, std = dataset_info("fashion_mnist").normalization(3)
    augment = [T.RandomCrop(32, padding=4), T.RandomHorizontalFlip()]
    loaders = {
        "fast": TensorLoader(
            images, targets, BATCH, mean, std, augment=True, shuffle=True, drop_last=True
        ),
        "torchvision": DataLoader(
            PILImages(images, targets, T.Compose([*augment, T.ToTensor(), T.Normalize(mean, std)])),
            BATCH,
            shuffle=True,
            drop_last=True,
        ),
    }
    seconds = interleaved_seconds(
        {k: one_pass(v) for k, v in loaders.items()},
        settings["rounds"],
        settings["warmup"],
        torch.device("cpu"),
    )
    per_pass = len(images) // BATCH * BATCH
    results = {
        k: {"images_per_s": round(per_pass / statistics.median(s), 1)} for k, s in seconds.items()
    }
    write(args.out, settings, results)


if __name__ == "__main__":
    main()
