"""Loading the peers' checkpoint formats safely, and writing checkpoints atomically."""

from __future__ import annotations

import errno
import io
import lzma
import os
import pickle
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

# Keys under which peers store the weights: RepDistiller/mdistiller ("model"), torchvision /
# timm style ("state_dict"), Lightning-like loops ("model_state_dict").
WEIGHT_KEYS = ("model", "state_dict", "model_state_dict")
ZIP_MAGIC = b"PK\x03\x04"  # torch.save's zip format (PyTorch >= 1.6)
PICKLE_MAGIC = b"\x80"  # the legacy format: a pickle (protocol 2+)
XZ_MAGIC = b"\xfd7zXZ\x00"  # either of them compressed with xz (the book's shipped runs)


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be used for the given model (the message says why)."""


def read_checkpoint(path: str | os.PathLike) -> dict:
    """`torch.load(path, weights_only=True)` with clear errors; never executes pickled code.
    Reads xz-compressed checkpoints too (`save_checkpoint(..., compress=True)`)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    with open(path, "rb") as f:
        head = f.read(len(XZ_MAGIC))
    source: Path | io.BytesIO = path
    if head == XZ_MAGIC:
        try:
            source = io.BytesIO(lzma.decompress(path.read_bytes()))
        except lzma.LZMAError as e:
            raise CheckpointError(f"{path} is a damaged xz-compressed checkpoint: {e}") from e
        head = source.getvalue()[: len(XZ_MAGIC)]
    if not (head.startswith(ZIP_MAGIC) or head[:1] == PICKLE_MAGIC):
        raise CheckpointError(
            f"{path} is not a checkpoint: a PyTorch checkpoint is a zip archive (torch.save) or "
            f"a pickle, possibly compressed with xz, and this file starts with {head[:4]!r}"
        )
    try:
        obj = torch.load(source, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"{path} needs arbitrary code to unpickle (refused; only tensors and plain "
            f"containers are loaded with weights_only=True): {str(e).splitlines()[0]}"
        ) from e
    except Exception as e:  # zip/pickle format errors of a file that is not a checkpoint
        raise CheckpointError(f"{path} is not a PyTorch checkpoint: {e}") from e
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a checkpoint dict")
    return dict(obj)


def extract_state_dict(ckpt: Mapping, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The model weights inside any of the peer formats, with DataParallel `module.` stripped."""
    for key in WEIGHT_KEYS:
        if key in ckpt and isinstance(ckpt[key], Mapping):
            ckpt = ckpt[key]
            break
    state = {k: v for k, v in ckpt.items() if isinstance(v, torch.Tensor)}
    if not state:
        raise CheckpointError(
            f"{source} holds no tensors under {WEIGHT_KEYS} nor at top level "
            f"(top-level keys: {sorted(ckpt)[:10]})"
        )
    if all(k.startswith("module.") for k in state):
        state = {k.removeprefix("module."): v for k, v in state.items()}
    return state


def load_checkpoint(model: nn.Module, path: str | os.PathLike) -> dict:
    """Load weights into `model` (strict: every key present, every shape equal).

    Accepts `{"model": sd}`, `{"state_dict": sd}`, `{"model_state_dict": sd}` or a bare state
    dict, with or without `module.` prefixes. Returns the whole checkpoint dict (for metadata
    such as "epoch" or "best_acc"). Raises CheckpointError naming missing, unexpected and
    mis-shaped keys; never leaves a silently random model.
    """
    ckpt = read_checkpoint(path)
    load_state(model, extract_state_dict(ckpt, str(path)), str(path))
    return ckpt


def load_state(model: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """`model.load_state_dict(state, strict=True)`, failing first with a CheckpointError that
    names the missing, unexpected and mis-shaped keys of `source`."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    if missing or unexpected or shapes:

        def show(items):
            return ", ".join(items[:8]) + (f" (+{len(items) - 8} more)" if len(items) > 8 else "")

        parts = [
            f"{label}: {show(items)}"
            for label, items in (
                ("missing keys", missing),
                ("unexpected keys", unexpected),
                ("shape mismatches", shapes),
            )
            if items
        ]
        raise CheckpointError(f"{source} does not fit {type(model).__name__}: " + "; ".join(parts))
    model.load_state_dict(state, strict=True)


def save_checkpoint(obj: Mapping, path: str | os.PathLike, compress: bool = False) -> Path:
    """Write `obj` with torch.save to a temp file in the same folder, then rename over `path`
    (atomic on POSIX: a crash leaves the old file or the new one, never half of one). With
    `compress`, the file is xz-compressed (10-17 % smaller for trained weights, read back by
    `read_checkpoint`; torch.load alone cannot read it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            if compress:
                buffer = io.BytesIO()
                torch.save(dict(obj), buffer)
                f.write(lzma.compress(buffer.getvalue(), preset=9))
            else:
                torch.save(dict(obj), f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError | RuntimeError) and no_space_left(e, path.parent):
            raise OSError(
                errno.ENOSPC,
                f"no space left on the device of {path.parent} while writing {path.name} "
                f"({shutil.disk_usage(path.parent).free >> 20} MiB free): free some space "
                "and resume the run",
            ) from e
        raise
    return path


def no_space_left(error: BaseException, folder: Path) -> bool:
    """Whether a failed write ran out of disk space: ENOSPC, or torch.save's zip writer error
    ("PytorchStreamWriter failed writing file ...") on a device that is (nearly) full."""
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        return True
    return "failed writing" in str(error) and shutil.disk_usage(folder).free < 64 << 20
