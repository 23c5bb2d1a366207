"""Network weights for a run: checkpoint specs resolved to state dicts (a file, torchvision's
ImageNet weights, or the published CIFAR-100 teachers: the `cifar_teachers.tar` archive released
with mdistiller, the same weights as RepDistiller's, fetched, verified and found by name)."""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
import urllib.request
from pathlib import Path

import torch

from ..data import data_dir
from ..models import CheckpointError, create_model, load_checkpoint, read_checkpoint
from ..models.checkpoint import extract_state_dict, load_state

ARCHIVE_URL = (
    "https://github.com/megvii-research/mdistiller/releases/download/checkpoints/cifar_teachers.tar"
)
# archive member folder: cifar_teachers/<arch>_vanilla/ckpt_epoch_240.pth
PUBLISHED = ("resnet56", "resnet110", "resnet32x4", "wrn_40_2", "vgg13", "ResNet50")


def teachers_dir() -> Path:
    return data_dir() / "teachers"


def published_path(arch: str, root: Path | None = None) -> Path:
    root = teachers_dir() if root is None else Path(root)
    return root / "cifar_teachers" / f"{arch}_vanilla" / "ckpt_epoch_240.pth"


def resolve_checkpoint(spec: str | None, arch: str, root: Path | None = None) -> Path:
    """A checkpoint path from a file path, or from None / "published": the released CIFAR-100
    teacher for `arch` once `dfpt teachers fetch` has installed it."""
    if spec in (None, "published"):
        path = published_path(arch, root)
        if not path.is_file():
            hint = (
                "give its checkpoint path, or run `dfpt teachers fetch` for the published "
                "CIFAR-100 one"
                if arch in PUBLISHED
                else f"give its checkpoint path (published teachers: {', '.join(PUBLISHED)})"
            )
            raise FileNotFoundError(f"no checkpoint for {arch} (looked for {path}): {hint}")
        return path
    path = Path(spec).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    return path


def fetch(url: str = ARCHIVE_URL, root: Path | None = None) -> list[str]:
    """Download the archive, extract it next to `root`, verify every published teacher loads
    into its zoo model, then move it into place. Nothing half-written is left behind on
    failure. Returns the verified architecture names."""
    root = teachers_dir() if root is None else Path(root)
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=".fetch-") as tmp:
        archive = Path(tmp) / "cifar_teachers.tar"
        try:
            with urllib.request.urlopen(url, timeout=60) as response, open(archive, "wb") as f:
                shutil.copyfileobj(response, f)
        except OSError as e:
            raise RuntimeError(
                f"could not download {url}: {e}. Download it by hand and run "
                f"`dfpt teachers fetch --url file:///path/to/cifar_teachers.tar`"
            ) from e
        try:
            with tarfile.open(archive) as tar:
                tar.extractall(tmp, filter="data")
        except tarfile.TarError as e:
            raise RuntimeError(f"{url} is not a valid tar archive: {e}") from e
        staged = Path(tmp)
        found = [a for a in PUBLISHED if published_path(a, staged).is_file()]
        if not found:
            raise RuntimeError(f"{url} holds no cifar_teachers/<arch>_vanilla/ckpt_epoch_240.pth")
        for arch in found:
            verify(arch, published_path(arch, staged))
        target = root / "cifar_teachers"
        if target.exists():
            shutil.rmtree(target)
        os.replace(staged / "cifar_teachers", target)
    return found


def verify(arch: str, path: Path) -> None:
    """The checkpoint loads strictly into the zoo's `arch` at 100 classes."""
    try:
        load_checkpoint(create_model(arch, num_classes=100), path)
    except CheckpointError as e:
        raise RuntimeError(f"{path} does not load into {arch}: {e}") from e


def installed(root: Path | None = None) -> dict[str, Path]:
    return {a: published_path(a, root) for a in PUBLISHED if published_path(a, root).is_file()}


def torchvision_weights(arch: str) -> dict:
    """torchvision's default ImageNet weights for a `tv_*` zoo model (downloaded by torchvision
    into its cache on first use)."""
    from torchvision import models as tvm

    name = arch.removeprefix("tv_")
    enum = {m.lower(): m for m in dir(tvm) if m.endswith("_Weights")}.get(f"{name}_weights")
    if not arch.startswith("tv_") or enum is None:
        raise ValueError(f"torchvision weights exist only for tv_* models, not {arch!r}")
    return getattr(tvm, enum).DEFAULT.get_state_dict(progress=False)


def checkpoint_state(arch: str, spec: str | None, role: str) -> dict:
    """The state dict a checkpoint spec names: "torchvision" (ImageNet weights of a tv_*
    model), None / "published" (the published CIFAR-100 teacher) or a file path."""
    if spec == "torchvision":
        return torchvision_weights(arch)
    try:
        path = resolve_checkpoint(spec, arch)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{role}: {e}") from e
    return extract_state_dict(read_checkpoint(path), str(path))


def load_network(
    arch: str,
    spec: str | None,
    num_classes: int,
    in_chans: int,
    role: str,
    finetune: bool = False,
    **model_args,
) -> torch.nn.Module:
    """A zoo network with the weights `spec` names (see `checkpoint_state`). A missing
    checkpoint is an error, never a random network. With `finetune`, a final classifier of
    another size (e.g. ImageNet's 1000 classes) keeps its fresh initialisation; every other
    weight must fit."""
    model = create_model(arch, num_classes=num_classes, in_chans=in_chans, **model_args)
    state = checkpoint_state(arch, spec, role)
    if finetune:
        classifier = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)][-1]
        own = model.state_dict()
        for key in (f"{classifier}.weight", f"{classifier}.bias"):
            if key in state and key in own and state[key].shape != own[key].shape:
                state[key] = own[key]
    load_state(model, state, f"{role} checkpoint {spec}")
    return model
