"""Datasets, transforms and fast loaders: Fashion-MNIST, CIFAR-10/100, CUB-200-2011, ImageNet.

Every dataset is read from disk in its official layout (see data/README.md). A missing dataset is
a `DatasetNotFoundError` that says where it looked and how to get the data; an unreadable file is
a `DatasetCorruptError` naming the file. Nothing is ever replaced by random data.

The small datasets also load as one uint8 tensor (`load_tensors`), which `TensorLoader` keeps on
the device and batches, augments and normalises there, without PIL and without worker processes.
"""

from __future__ import annotations

import gzip
import numbers
import os
import pickle
import shutil
import tempfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset
from torchvision import datasets as tvd
from torchvision import transforms as T
from torchvision.datasets.folder import default_loader
from torchvision.datasets.mnist import read_image_file, read_label_file
from torchvision.transforms import functional as TF

__all__ = [
    "CIFAR10",
    "CIFAR100",
    "CUB200",
    "DatasetCorruptError",
    "DatasetInfo",
    "DatasetNotFoundError",
    "EpochDataLoader",
    "FashionMNIST",
    "LabeledSubset",
    "TensorLoader",
    "dataset_info",
    "get_dataset",
    "list_datasets",
    "load_tensors",
    "make_loader",
    "resolve_root",
    "split_indices",
    "stratified_indices",
]

FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
"""Where the Debian package `dataset-fashion-mnist` installs the gzipped idx files."""

_LUMA = (0.299, 0.587, 0.114)  # ITU-R 601-2 weights, as in PIL's convert("L")
_IMAGENET_MEAN, _IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class DatasetNotFoundError(FileNotFoundError):
    """A dataset is not where it was looked for; the message says how to get it."""


class DatasetCorruptError(RuntimeError):
    """A dataset file exists but cannot be read; the message names the file."""


@dataclass(frozen=True)
class DatasetInfo:
    """Static facts about a dataset. `mean`/`std` are per RGB channel; `classes` is None when the
    names come from the files on disk; `tensor_resident` says whether `TensorLoader` applies."""

    name: str
    num_classes: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    classes: tuple[str, ...] | None
    tensor_resident: bool

    def normalization(self, in_chans: int = 3) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """(mean, std) for `in_chans` channels. For one channel: the luma-weighted mix of the RGB
        values (exact for the mean, an approximation for the std)."""
        _check_in_chans(in_chans)
        if in_chans == 3:
            return self.mean, self.std

        def mix(values: tuple[float, ...]) -> tuple[float]:
            return (round(sum(w * v for w, v in zip(_LUMA, values, strict=True)), 4),)

        return mix(self.mean), mix(self.std)


_CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer")
_CIFAR10_CLASSES += ("dog", "frog", "horse", "ship", "truck")
_FMNIST_STATS = (0.2860,) * 3, (0.3530,) * 3
_CIFAR10_STATS = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)
_CIFAR100_STATS = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
_INFOS = {
    info.name: info
    for info in [
        DatasetInfo("fashion_mnist", 10, 32, *_FMNIST_STATS, tuple(tvd.FashionMNIST.classes), True),
        DatasetInfo("cifar10", 10, 32, *_CIFAR10_STATS, _CIFAR10_CLASSES, True),
        DatasetInfo("cifar100", 100, 32, *_CIFAR100_STATS, None, True),
        DatasetInfo("cub200", 200, 224, _IMAGENET_MEAN, _IMAGENET_STD, None, False),
        DatasetInfo("imagenet", 1000, 224, _IMAGENET_MEAN, _IMAGENET_STD, None, False),
    ]
}


def list_datasets() -> list[str]:
    """Names accepted by `get_dataset`."""
    return list(_INFOS)


def dataset_info(name: str) -> DatasetInfo:
    """The `DatasetInfo` of `name`; ValueError listing the known names otherwise."""
    try:
        return _INFOS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(_INFOS)}") from None


def data_dir() -> Path:
    """Where datasets (and fetched teacher checkpoints) live: $DFPT_DATA_DIR, else `./data`
    (the workbook points it at its checkout's data/)."""
    return Path(os.environ.get("DFPT_DATA_DIR", "data")).expanduser()


def resolve_root(root: str | os.PathLike | None = None) -> Path:
    """The data folder: `root`, else `data_dir()`."""
    return Path(root).expanduser() if root is not None else data_dir()


def _check_in_chans(in_chans: int) -> None:
    if in_chans not in (1, 3):
        raise ValueError(f"in_chans must be 1 or 3, got {in_chans!r}")


# --- CIFAR -------------------------------------------------------------------------------------


class _CifarUnpickler(pickle.Unpickler):
    """Admits only what the CIFAR pickle format needs (dicts, lists, str/bytes, and numpy
    arrays); any other global, e.g. `os.system` in a crafted file, is refused before it runs."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # bytes pickled by Python 3 at protocol 2
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(
                f"refused {module}.{name}: a CIFAR file holds only arrays, lists and strings"
            )
        return super().find_class(module, name)


def _read_pickle(path: Path) -> dict:
    """One CIFAR pickle as a dict with str keys (Python 2 or 3 pickles), read by a restricted
    unpickler (no code runs from a data file); names the file if it is bad."""
    try:
        with open(path, "rb") as f:
            entry = _CifarUnpickler(f, encoding="latin1").load()
        return {k.decode() if isinstance(k, bytes) else k: v for k, v in entry.items()}
    except Exception as err:  # a damaged pickle can raise nearly any exception type
        raise DatasetCorruptError(f"cannot read CIFAR file {path}: {err!r}") from err


class _CifarFiles:
    """torchvision's CIFAR reader, except that md5 sums are checked only when downloading (so a
    re-packed copy or a test fixture loads) and a missing or unreadable file is named."""

    label_key: str
    title: str
    name: str

    def __init__(self, root, train: bool = True, transform=None, download: bool = False) -> None:
        tvd.VisionDataset.__init__(self, root, transform=transform)
        self.train = train
        if download:
            self.download()  # torchvision: md5-verified download and extraction
        folder = Path(self.root) / self.base_folder
        files = [file for file, _md5 in (self.train_list if train else self.test_list)]
        missing = [f for f in (*files, self.meta["filename"]) if not (folder / f).is_file()]
        if missing:
            raise DatasetNotFoundError(
                f"{self.title} not found: looked for {', '.join(missing)} in {folder}. Get it with "
                f"get_dataset({self.name!r}, download=True), or extract {self.filename} from "
                f"{self.url} into {self.root} (it creates {self.base_folder}/)."
            )
        meta_path = folder / self.meta["filename"]
        try:
            names = _read_pickle(meta_path)[self.meta["key"]]
            self.classes = [c.decode() if isinstance(c, bytes) else str(c) for c in names]
        except (KeyError, TypeError) as err:
            raise DatasetCorruptError(f"{meta_path}: no {self.meta['key']!r} list") from err
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        data, self.targets = [], []
        for file in files:
            path = folder / file
            entry = _read_pickle(path)
            try:
                images = np.asarray(entry["data"])
                labels = [int(t) for t in entry[self.label_key]]
                if images.dtype != np.uint8:
                    raise TypeError(f"data has dtype {images.dtype}, expected uint8")
                images = images.reshape(-1, 3, 32, 32)
            except (KeyError, TypeError, ValueError) as err:
                raise DatasetCorruptError(f"{path}: not a {self.title} batch ({err!r})") from err
            if len(images) != len(labels) or not all(0 <= t < len(self.classes) for t in labels):
                raise DatasetCorruptError(
                    f"{path}: {len(images)} images but {len(labels)} labels, or labels outside "
                    f"0..{len(self.classes) - 1}"
                )
            data.append(images)
            self.targets.extend(labels)
        self.data = np.concatenate(data).transpose(0, 2, 3, 1)  # NHWC, like torchvision


class CIFAR10(_CifarFiles, tvd.CIFAR10):
    """CIFAR-10 from `<root>/cifar-10-batches-py` (torchvision layout)."""

    label_key, title, name = "labels", "CIFAR-10", "cifar10"


class CIFAR100(_CifarFiles, tvd.CIFAR100):
    """CIFAR-100 (fine labels) from `<root>/cifar-100-python` (torchvision layout)."""

    label_key, title, name = "fine_labels", "CIFAR-100", "cifar100"


# --- Fashion-MNIST -----------------------------------------------------------------------------

_FMNIST_FILES = [Path(file).stem for file, _md5 in tvd.FashionMNIST.resources]


def _check_labels(labels, num_classes: int, source: Path) -> None:
    """Every label in 0..num_classes-1, else an error naming the file (not an IndexError deep
    inside a training step)."""
    labels = torch.as_tensor(labels)
    bad = (labels < 0) | (labels >= num_classes)
    if bad.any():
        first = int(torch.nonzero(bad)[0])
        raise DatasetCorruptError(
            f"{source}: label {int(labels[first])} at index {first} is outside "
            f"0..{num_classes - 1} ({int(bad.sum())} such labels); the file is damaged or "
            "not this dataset's"
        )


def _read_idx(path: Path, reader: Callable[[str], torch.Tensor]) -> torch.Tensor:
    try:
        return reader(str(path))
    except (AssertionError, RuntimeError, ValueError, TypeError, KeyError, IndexError) as err:
        raise DatasetCorruptError(f"cannot read idx file {path}: {err!r}") from err


class FashionMNIST(tvd.FashionMNIST):
    """torchvision's Fashion-MNIST (`<root>/FashionMNIST/raw`), naming a file it cannot parse."""

    def _load_data(self) -> tuple[torch.Tensor, torch.Tensor]:
        split = "train" if self.train else "t10k"
        raw = Path(self.raw_folder)
        images = _read_idx(raw / f"{split}-images-idx3-ubyte", read_image_file)
        labels = _read_idx(raw / f"{split}-labels-idx1-ubyte", read_label_file)
        if len(images) != len(labels):
            raise DatasetCorruptError(
                f"{raw}: {len(images)} {split} images but {len(labels)} labels"
            )
        _check_labels(labels, len(self.classes), raw / f"{split}-labels-idx1-ubyte")
        return images, labels


def _gunzip(src: Path, dst: Path) -> None:
    """Decompress `src` into `dst` via a temporary file and a rename (readers never see half)."""
    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out, gzip.open(src, "rb") as inp:
            shutil.copyfileobj(inp, out)
        os.chmod(tmp, 0o644)
        os.replace(tmp, dst)
    except (gzip.BadGzipFile, EOFError, zlib.error) as err:
        raise DatasetCorruptError(f"cannot decompress {src}: {err!r}") from err
    finally:
        Path(tmp).unlink(missing_ok=True)


def _fashion_mnist(root: Path, train: bool, download: bool, transform=None) -> FashionMNIST:
    """Cache in `root`, else the Debian package (decompressed into the cache), else download."""
    raw = root / "FashionMNIST" / "raw"
    if not all((raw / f).is_file() for f in _FMNIST_FILES):
        system = FASHION_MNIST_SYSTEM_DIR
        if all((system / f"{f}.gz").is_file() for f in _FMNIST_FILES):
            raw.mkdir(parents=True, exist_ok=True)
            for f in _FMNIST_FILES:
                if not (raw / f).is_file():
                    _gunzip(system / f"{f}.gz", raw / f)
        elif not download:
            raise DatasetNotFoundError(
                f"Fashion-MNIST not found: looked for {', '.join(_FMNIST_FILES)} in {raw} and for "
                f"the .gz files in {system}. Get it with `apt-get install dataset-fashion-mnist`, "
                f"or get_dataset('fashion_mnist', download=True) to download into {root}."
            )
    return FashionMNIST(root, train=train, transform=transform, download=download)


# --- CUB-200-2011 and ImageNet -------------------------------------------------------------------


def _read_table(path: Path) -> dict[str, str]:
    """The '<id> <value>' rows of a CUB .txt file as {id: value}; names the file on a bad row."""
    try:
        lines = path.read_text().splitlines()
    except UnicodeDecodeError as err:
        raise DatasetCorruptError(f"{path} is not a text file: {err}") from err
    table = {}
    for number, line in enumerate(lines, 1):
        if line.strip():
            parts = line.split(maxsplit=1)
            if len(parts) != 2:
                raise DatasetCorruptError(f"{path}, line {number}: expected '<id> <value>'")
            table[parts[0]] = parts[1].strip()
    return table


class CUB200(tvd.VisionDataset):
    """CUB-200-2011 from its official layout `<root>/CUB_200_2011`; targets are 0-based."""

    base_folder = "CUB_200_2011"
    url = "https://data.caltech.edu/records/65de6-vzc74"
    tables = ("images.txt", "train_test_split.txt", "image_class_labels.txt", "classes.txt")

    def __init__(self, root, train: bool = True, transform=None) -> None:
        super().__init__(root, transform=transform)
        self.train = train
        folder = Path(self.root) / self.base_folder
        missing = [f for f in (*self.tables, "images") if not (folder / f).exists()]
        if missing:
            raise DatasetNotFoundError(
                f"CUB-200-2011 not found: missing {', '.join(missing)} in {folder}. It cannot be "
                f"downloaded automatically: get CUB_200_2011.tgz from {self.url} and extract it "
                f"into {self.root}, giving {folder}/{{{', '.join(self.tables)}, "
                "images/<class_dir>/<file>.jpg}."
            )
        paths, splits, labels, names = (_read_table(folder / t) for t in self.tables)
        self.classes = [names[k].split(".", 1)[-1] for k in sorted(names, key=int)]
        self.samples = []
        for image_id, rel in paths.items():
            try:
                split, label = int(splits[image_id]), int(labels[image_id]) - 1
            except (KeyError, ValueError) as err:
                raise DatasetCorruptError(
                    f"{folder}: image {image_id} of images.txt has no valid row in "
                    f"train_test_split.txt or image_class_labels.txt ({err!r})"
                ) from err
            if split not in (0, 1) or not 0 <= label < len(self.classes):
                raise DatasetCorruptError(
                    f"{folder}: image {image_id} has split {split}, "
                    f"label {label + 1} (classes.txt has {len(self.classes)})"
                )
            if split == int(train):
                self.samples.append((str(folder / "images" / rel), label))
        self.targets = [label for _, label in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        path, target = self.samples[index]
        image = default_loader(path)
        return (self.transform(image) if self.transform else image), target


def _imagenet(root: Path, train: bool, transform) -> tvd.ImageFolder:
    folder = root / "imagenet" / ("train" if train else "val")
    try:
        return tvd.ImageFolder(folder, transform=transform)
    except FileNotFoundError as err:
        raise DatasetNotFoundError(
            f"ImageNet not found in {folder} ({err}). It cannot be downloaded automatically: "
            f"obtain ILSVRC2012 from image-net.org and arrange it as {folder}/<wnid>/<image>.JPEG "
            "(the validation images sorted into their wnid folders too)."
        ) from err


# --- datasets with transforms ------------------------------------------------------------------


def _open(name: str, train: bool, root: Path, download: bool, transform=None) -> Dataset:
    if name == "fashion_mnist":
        return _fashion_mnist(root, train, download, transform)
    if name in ("cifar10", "cifar100"):
        cls = CIFAR10 if name == "cifar10" else CIFAR100
        return cls(root, train=train, transform=transform, download=download)
    if name == "cub200":
        return CUB200(root, train=train, transform=transform)
    return _imagenet(root, train, transform)


def _transform(info: DatasetInfo, train: bool, in_chans: int) -> T.Compose:
    if info.tensor_resident:  # the 32x32 recipe; Fashion-MNIST is zero-padded 28 -> 32 first
        spatial = [T.Pad(2)] if info.name == "fashion_mnist" else []
        if train:
            spatial += [T.RandomCrop(32, padding=4), T.RandomHorizontalFlip()]
    elif train:
        spatial = [T.RandomResizedCrop(224), T.RandomHorizontalFlip()]
    else:
        spatial = [T.Resize(256), T.CenterCrop(224)]
    source_chans = 1 if info.name == "fashion_mnist" else 3
    color = [T.Grayscale(in_chans)] if in_chans != source_chans else []
    mean, std = info.normalization(in_chans)
    return T.Compose([*spatial, *color, T.ToTensor(), T.Normalize(mean, std)])


class LabeledSubset(Subset):
    """A `Subset` that keeps the parent's `.classes` and the selected `.targets`."""

    def __init__(self, dataset: Dataset, indices: Sequence[int]) -> None:
        super().__init__(dataset, indices)
        self.classes = dataset.classes
        self.targets = torch.as_tensor(dataset.targets)[list(indices)].tolist()


#: The seed of every test-split subset (`limit` on a test split), whatever the run's seed: all
#: runs of a comparison, over any seeds, are scored on the same test images.
TEST_SUBSET_SEED = 0
#: The seed of the validation split held out of the training split (`val_size`): the same
#: validation images for every run, never among any run's training images.
VAL_SUBSET_SEED = 1


def split_indices(
    targets, train: bool, limit: int | None, seed: int, val_size: int = 0, validation: bool = False
) -> list[int] | None:
    """Which images of a split a run uses (None: all of them).

    Test split (`train` False): a stratified `limit` subset chosen by `TEST_SUBSET_SEED`.
    Training split: with `val_size`, `val_size` stratified images chosen by `VAL_SUBSET_SEED`
    are held out as the validation split (`validation` True returns them) and the training
    subset (`limit`, chosen by the run's `seed`) is drawn from the rest; without, the subset is
    drawn from the whole split, as before validation existed."""
    if not train:
        if validation or val_size:
            raise ValueError("the validation split is held out of the training split (train=True)")
        return None if limit is None else stratified_indices(targets, limit, TEST_SUBSET_SEED)
    if not val_size:
        if validation:
            raise ValueError("validation=True needs val_size > 0 (the held-out image count)")
        return None if limit is None else stratified_indices(targets, limit, seed)
    targets = torch.as_tensor(targets)
    if val_size >= len(targets):
        raise ValueError(
            f"val_size {val_size} leaves no training images (the split has {len(targets)})"
        )
    held = stratified_indices(targets, val_size, VAL_SUBSET_SEED)
    if validation:
        return held
    mask = torch.ones(len(targets), dtype=torch.bool)
    mask[held] = False
    rest = torch.nonzero(mask).flatten()
    if limit is None:
        return rest.tolist()
    return rest[stratified_indices(targets[rest], limit, seed)].tolist()


def stratified_indices(targets, limit: int, seed: int = 0) -> list[int]:
    """`limit` sorted indices into `targets`, as equally many per class as the class sizes allow,
    drawn with a torch.Generator seeded by `seed` (also deciding which classes get one extra)."""
    if isinstance(limit, bool) or not isinstance(limit, numbers.Integral) or limit < 1:
        raise ValueError(f"limit must be a positive int, got {limit!r}")
    limit = int(limit)
    targets = torch.as_tensor(targets)
    if limit >= len(targets):
        return list(range(len(targets)))
    g = torch.Generator().manual_seed(seed)
    classes, counts = torch.unique(targets, return_counts=True)
    order = torch.randperm(len(classes), generator=g)
    order = order[torch.argsort(counts[order], stable=True)]  # smallest classes first
    quota, left = {}, limit
    for k, c in enumerate(order.tolist()):  # water-filling: a full share, or the whole class
        quota[c] = min(int(counts[c]), left // (len(order) - k))
        left -= quota[c]
    picks = []
    for c, label in enumerate(classes):
        members = torch.nonzero(targets == label).flatten()
        picks.append(members[torch.randperm(len(members), generator=g)[: quota[c]]])
    return sorted(torch.cat(picks).tolist())


def get_dataset(
    name: str,
    train: bool = True,
    root: str | os.PathLike | None = None,
    download: bool = False,
    in_chans: int = 3,
    limit: int | None = None,
    seed: int = 0,
    val_size: int = 0,
    validation: bool = False,
) -> Dataset:
    """The train or test split of `name` with its standard transforms (augmented if `train`),
    or with `validation` the validation images held out of the training split (not augmented).

    `in_chans` 1 or 3 (grayscale / gray replicated); `limit`, `seed` and `val_size` choose the
    images (see `split_indices`). Root: see `resolve_root`."""
    info = dataset_info(name)
    transform = _transform(info, train and not validation, in_chans)
    dataset = _open(name, train or validation, resolve_root(root), download, transform)
    indices = split_indices(dataset.targets, train or validation, limit, seed, val_size, validation)
    return dataset if indices is None else LabeledSubset(dataset, indices)


# --- fast tensor-resident path -------------------------------------------------------------------


def _luma(rgb: np.ndarray) -> np.ndarray:
    """[N,H,W,3] -> [N,H,W,1] uint8 through torchvision's PIL grayscale (bit-identical to the
    `get_dataset` path), as one PIL image for the whole array rather than one per sample."""
    n, h, w, _ = rgb.shape
    gray = TF.to_grayscale(Image.fromarray(np.ascontiguousarray(rgb).reshape(n * h, w, 3)))
    return np.array(gray).reshape(n, h, w, 1)


def load_tensors(
    name: str,
    train: bool = True,
    root: str | os.PathLike | None = None,
    download: bool = False,
    in_chans: int = 3,
    limit: int | None = None,
    seed: int = 0,
    val_size: int = 0,
    validation: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw split of a tensor-resident dataset: (uint8 images [N,C,32,32], int64 targets [N]),
    un-normalised; Fashion-MNIST zero-padded to 32x32. Same images as `get_dataset`."""
    info = dataset_info(name)
    if not info.tensor_resident:
        raise ValueError(f"{name} is not tensor-resident; use get_dataset or make_loader")
    _check_in_chans(in_chans)
    dataset = _open(name, train or validation, resolve_root(root), download)
    images = torch.as_tensor(dataset.data)
    targets = torch.as_tensor(dataset.targets, dtype=torch.int64)
    keep = split_indices(targets, train or validation, limit, seed, val_size, validation)
    if keep is not None:
        keep = torch.tensor(keep, dtype=torch.int64)
        images, targets = images[keep], targets[keep]
    if name == "fashion_mnist":  # [N,28,28] gray
        images = F.pad(images.unsqueeze(1), (2, 2, 2, 2)).expand(-1, in_chans, -1, -1)
    else:  # [N,32,32,3] RGB
        images = torch.from_numpy(_luma(images.numpy())) if in_chans == 1 else images
        images = images.permute(0, 3, 1, 2)
    return images.contiguous(), targets


def fixed_batch(
    name: str,
    n: int,
    train: bool = True,
    root: str | os.PathLike | None = None,
    in_chans: int = 3,
    limit: int | None = None,
    seed: int = 0,
    val_size: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `n` images of a tensor-resident split's subset (`load_tensors`), normalised by
    a TensorLoader and not augmented: a fixed batch to probe a model on during training
    (`engine.probe.PathProbe`)."""
    images, targets = load_tensors(
        name, train, root, in_chans=in_chans, limit=limit, seed=seed, val_size=val_size
    )
    mean, std = dataset_info(name).normalization(in_chans)
    return next(iter(TensorLoader(images[:n], targets[:n], n, mean, std)))


def _epoch_seed(seed: int, epoch: int) -> int:
    """A well-mixed 64-bit seed that depends only on (seed, epoch)."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1, dtype=np.uint64)[0])


def _crop_flip(x: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor, padding: int):
    """Per-sample RandomCrop(H, padding) with zero fill, then horizontal flip where `flips`:
    two gathers from the zero-padded batch, the crop window's rows, then its columns (read
    reversed for a flip)."""
    b, c, h, w = x.shape
    padded = F.pad(x, (padding,) * 4)
    rows = offsets[:, :1] + torch.arange(h, device=x.device)
    cols = torch.arange(w, device=x.device).expand(b, w)
    cols = torch.where(flips[:, None], cols.flip(1), cols) + offsets[:, 1:]
    window = padded.gather(2, rows[:, None, :, None].expand(b, c, h, padded.shape[3]))
    return window.gather(3, cols[:, None, None, :].expand(b, c, h, w))


class TensorLoader:
    """Batches `(float32 normalised images [B,C,H,W], int64 targets [B])` from a uint8 image tensor
    held on `device`; no worker processes, no PIL.

    `augment`: torchvision RandomCrop(H, padding=4) + RandomHorizontalFlip() done on the uint8
    batch (zero padding before normalising), drawn independently per sample. The epoch's order
    and augmentations are a pure function of (seed, epoch), drawn on a CPU generator: call
    `set_epoch` before each epoch, as with DistributedSampler. With `world_size` > 1 each rank
    takes every world_size-th position of the epoch's order, truncated to a multiple of
    world_size, so the ranks' shards are disjoint and equally long.
    """

    padding = 4

    def __init__(
        self,
        images: torch.Tensor,
        targets: torch.Tensor,
        batch_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        augment: bool = False,
        shuffle: bool = False,
        drop_last: bool = False,
        seed: int = 0,
        device: str | torch.device = "cpu",
        channels_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"images must be uint8 [N,C,H,W], got {images.dtype} {images.shape}")
        if len(images) != len(targets):
            raise ValueError(f"{len(images)} images but {len(targets)} targets")
        if len(mean) != images.shape[1] or len(std) != images.shape[1]:
            raise ValueError(f"mean/std need {images.shape[1]} values, got {mean!r}, {std!r}")
        if batch_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"bad batch_size={batch_size}, rank={rank}, world_size={world_size}")
        self.device = torch.device(device)
        self.images = images.to(self.device)
        self.targets = torch.as_tensor(targets, dtype=torch.int64).to(self.device)
        self.mean = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        self.batch_size, self.augment, self.shuffle = batch_size, augment, shuffle
        self.drop_last, self.seed, self.channels_last = drop_last, seed, channels_last
        self.rank, self.world_size = rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order and augmentations the next iteration yields."""
        self.epoch = epoch

    def __len__(self) -> int:
        per_rank = len(self.images) // self.world_size
        return per_rank // self.batch_size if self.drop_last else -(-per_rank // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.images)
        g = torch.Generator().manual_seed(_epoch_seed(self.seed, self.epoch))
        draws = [torch.randperm(n, generator=g) if self.shuffle else torch.arange(n)]
        if self.augment:
            draws.append(torch.randint(0, 2 * self.padding + 1, (n, 2), generator=g))
            draws.append(torch.rand(n, generator=g) < 0.5)
        shard = slice(self.rank, n - n % self.world_size, self.world_size)
        order, *aug = (d[shard].to(self.device) for d in draws)
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            batch = slice(start, start + self.batch_size)
            x = self.images[order[batch]]
            if self.augment:
                x = _crop_flip(x, aug[0][batch], aug[1][batch], self.padding)
            x = x.float().div_(255).sub_(self.mean).div_(self.std)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, self.targets[order[batch]]


class EpochDataLoader:
    """A torch DataLoader behind the `TensorLoader` interface: `set_epoch`, `len`, and batches
    moved to `device`. `set_epoch` reseeds the shuffle (and the DistributedSampler)."""

    def __init__(self, loader: DataLoader, seed: int, device, channels_last: bool = False) -> None:
        self.loader, self.seed = loader, seed
        self.device, self.channels_last = torch.device(device), channels_last
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration's order a function of (seed, epoch)."""
        if isinstance(self.loader.sampler, DistributedSampler):
            self.loader.sampler.set_epoch(epoch)
        self.loader.generator.manual_seed(_epoch_seed(self.seed, epoch))

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for images, targets in self.loader:
            images = images.to(self.device, non_blocking=True)
            if self.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            yield images, targets.to(self.device, non_blocking=True)


def _check_batches(size: int, batch_size: int, world_size: int, drop_last: bool, name: str):
    """A loader that drops its partial batch must still yield one: otherwise a run would train
    nothing and save an untrained model."""
    if drop_last and size // world_size < batch_size:
        raise ValueError(
            f"batch_size {batch_size} is larger than the {size // world_size} {name} training "
            f"images{' per process' if world_size > 1 else ''}: no full batch to train on; "
            "lower batch_size or raise limit_train"
        )


def make_loader(
    name: str,
    train: bool,
    batch_size: int,
    *,
    root: str | os.PathLike | None = None,
    download: bool = False,
    in_chans: int = 3,
    limit: int | None = None,
    seed: int = 0,
    val_size: int = 0,
    validation: bool = False,
    device: str | torch.device = "cpu",
    fast: bool | None = None,
    num_workers: int = 0,
    channels_last: bool = False,
    rank: int = 0,
    world_size: int = 1,
    drop_last: bool | None = None,
) -> TensorLoader | EpochDataLoader:
    """A loader of `name` (shuffled and augmented if `train`; `drop_last` defaults to `train`):
    a `TensorLoader` for tensor-resident datasets unless `fast=False`, else an `EpochDataLoader`
    over `get_dataset`. Both yield (normalised float images, int64 targets) on `device`.
    `validation` (with `train` False) loads the `val_size` images held out of the training split
    (`split_indices`)."""
    if validation and train:
        raise ValueError("a validation loader is an evaluation loader: pass train=False")
    info = dataset_info(name)
    if fast and not info.tensor_resident:
        raise ValueError(f"fast=True needs a tensor-resident dataset; {name} is not")
    drop_last = train if drop_last is None else drop_last
    if info.tensor_resident and fast is not False:
        images, targets = load_tensors(
            name, train, root, download, in_chans, limit, seed, val_size, validation
        )
        _check_batches(len(targets), batch_size, world_size, drop_last, name)
        mean, std = info.normalization(in_chans)
        return TensorLoader(
            images,
            targets,
            batch_size,
            mean,
            std,
            augment=train,
            shuffle=train,
            drop_last=drop_last,
            seed=seed,
            device=device,
            channels_last=channels_last,
            rank=rank,
            world_size=world_size,
        )
    dataset = get_dataset(name, train, root, download, in_chans, limit, seed, val_size, validation)
    _check_batches(len(dataset), batch_size, world_size, drop_last, name)
    sampler = None
    if world_size > 1:
        sampler = DistributedSampler(
            dataset, world_size, rank, shuffle=train, seed=seed, drop_last=drop_last
        )
    loader = DataLoader(
        dataset,
        batch_size,
        shuffle=train and sampler is None,
        sampler=sampler,
        num_workers=num_workers,
        pin_memory=torch.device(device).type == "cuda",
        drop_last=drop_last,
        generator=torch.Generator(),
        persistent_workers=num_workers > 0,
    )
    return EpochDataLoader(loader, seed, device, channels_last)
