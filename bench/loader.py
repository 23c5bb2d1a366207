"""Data loading throughput (images/s) on Fashion-MNIST with training augmentation: the fast
tensor loader (one uint8 tensor, batched crop+flip) against torchvision's per-image pipeline."""

import time

from _common import parse_args, write

from dfpt_core.data import make_loader


def throughput(fast: bool, limit: int, num_workers: int = 0) -> float:
    loader = make_loader(
        "fashion_mnist", True, 128, limit=limit, fast=fast, num_workers=num_workers
    )
    loader.set_epoch(0)
    start, n = time.perf_counter(), 0
    for images, _ in loader:
        n += len(images)
    return n / (time.perf_counter() - start)


def main():
    args = parse_args(__doc__)
    limit = 5000 if args.quick else 20000
    results = [
        {
            "loader": "TensorLoader (fast)",
            "images": limit,
            "images_per_s": round(throughput(True, limit)),
        },
        {
            "loader": "torchvision DataLoader, 0 workers",
            "images": limit,
            "images_per_s": round(throughput(False, limit)),
        },
        {
            "loader": "torchvision DataLoader, 2 workers",
            "images": limit,
            "images_per_s": round(throughput(False, limit, num_workers=2)),
        },
    ]
    write(args.out, results)


if __name__ == "__main__":
    main()
