"""Teacher checkpoints: the published CIFAR-100 teachers (the `cifar_teachers.tar` archive
released with mdistiller, the same weights as RepDistiller's: fetch, verify, resolve names to
files), and the small `cpu`-scale teachers shipped in the repository (data/teachers/cpu/)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
import tempfile
import urllib.request
from pathlib import Path

from .models import CheckpointError, create_model, load_checkpoint
from .paths import REPO_ROOT, data_dir

ARCHIVE_URL = (
    "https://github.com/megvii-research/mdistiller/releases/download/checkpoints/cifar_teachers.tar"
)
SHIPPED_DIR = REPO_ROOT / "data" / "teachers" / "cpu"
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


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def shipped_manifest(root: Path = SHIPPED_DIR) -> dict:
    """The manifest of the shipped teacher runs ({} when there is none): for each run folder
    its architecture, test metrics, training config, library version and file checksums
    (written by scripts/ship_cpu_teachers.py)."""
    path = Path(root) / "manifest.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def shipped_run(name: str, root: Path = SHIPPED_DIR) -> Path | None:
    """The shipped run folder `name` (a `<arch>-ce-<config hash>` folder, as the notebooks'
    run cache names it), its files verified against the manifest; None if not shipped."""
    entry = shipped_manifest(root).get("runs", {}).get(name)
    if entry is None:
        return None
    run_dir = Path(root) / name
    for rel, expected in entry["files"].items():
        path = run_dir / rel
        if not path.is_file() or sha256(path) != expected:
            raise RuntimeError(
                f"shipped teacher file {path} is missing or does not match its sha256 in "
                f"{Path(root) / 'manifest.json'}: restore it with `git checkout -- {path}`"
            )
    return run_dir
