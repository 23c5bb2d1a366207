"""Seeds, determinism, devices, distributed setup and version records."""

from __future__ import annotations

import ctypes
import os
import platform
import random
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seed Python, NumPy and torch (all devices); with `deterministic`, ask for deterministic
    kernels (cuDNN deterministic, no benchmark; warn-only where no deterministic kernel exists)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002  (third-party code draws from it)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True, warn_only=True)


def resolve_device(device: str = "auto") -> torch.device:
    """ "auto" picks CUDA, then Apple MPS, then the CPU; explicit names are checked."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank() if is_distributed() else 0)
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available; use auto/cpu")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {device!r} requested but MPS is not available; use auto/cpu")
    return dev


def device_name(dev: torch.device) -> str:
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    return platform.processor() or platform.machine() if dev.type == "cpu" else dev.type


def bf16_evidence(dev: torch.device | str = "cpu") -> dict:
    """Whether `dev` computes bf16 natively, with what that was read from: {"native": bool,
    ...}. CUDA: compute capability 8.0 or newer. CPU: the instruction-set flags of
    /proc/cpuinfo (x86: avx512_bf16 or amx_bf16; arm64: bf16) and torch's own CPU checks where
    this torch has them. False when unsure (other devices, no flags to read): bf16 is then
    emulated or unknown, and slower than fp32 as often as not."""
    dev = torch.device(dev)
    if dev.type == "cuda":
        capability = torch.cuda.get_device_capability(dev)
        return {"native": capability >= (8, 0), "cuda_capability": list(capability)}
    if dev.type != "cpu":
        return {"native": False, "reason": f"not known for device type {dev.type!r}"}
    machine = platform.machine().lower()
    evidence: dict = {"machine": machine, "cpu_capability": torch.backends.cpu.get_cpu_capability()}
    wanted = ("avx512_bf16", "amx_bf16") if machine in ("x86_64", "amd64") else ("bf16",)
    try:
        with open("/proc/cpuinfo") as f:
            lines = [x for x in f if x.lower().startswith(("flags", "features"))]
        flags = set(lines[0].split(":", 1)[1].split()) if lines else set()
        evidence["cpuinfo_flags"] = sorted(flag for flag in flags if flag in wanted)
    except OSError:
        flags = None
    checks = {}
    for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        check = getattr(torch.cpu, name, None)  # private helpers, absent in some versions
        if check is not None:
            checks[name.strip("_")] = bool(check())
    if checks:
        evidence["torch_checks"] = checks
    native = bool(flags) and any(flag in flags for flag in wanted)
    if flags is None:  # no /proc/cpuinfo: trust torch's checks if it has them
        native = machine in ("x86_64", "amd64") and any(checks.values())
    return {"native": native, **evidence}


def native_bf16(dev: torch.device | str = "cpu") -> bool:
    """True when `dev` computes bf16 natively (see `bf16_evidence`); False when unsure."""
    return bf16_evidence(dev)["native"]


def resolve_amp(amp: str, dev: torch.device | str) -> str:
    """The autocast mode a run uses: `amp` itself, except "auto", which is "bf16" where `dev`
    computes bf16 natively (`native_bf16`) and "none" (fp32) elsewhere. At cpu scale bf16 was
    measured within seed noise of fp32 and 1.6-1.8x faster (results/precision_study.json)."""
    if amp != "auto":
        return amp
    return "bf16" if native_bf16(dev) else "none"


#: glibc's mallopt parameters (malloc.h) and the largest mmap threshold it accepts on 64 bits
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX = -1, -3, 32 << 20


def keep_freed_memory() -> bool:
    """Have glibc's malloc keep freed blocks in the process instead of handing them back to the
    OS: blocks up to 32 MiB come from the heap (mmap threshold 32 MiB) and the heap is never
    trimmed. A CPU training step frees and reallocates the same activation buffers every step;
    under glibc's default policy the OS can take them back, and the next step faults them in
    again page by page (thousands of minor page faults per step in `bench/malloc.py`).
    Process-wide; the numbers a step computes do not change. True where applied (Linux with
    glibc), else False."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX)) and bool(
        mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)
    )


def rng_state() -> dict:
    """Every RNG the training loop draws from (to resume exactly)."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()  # noqa: NPY002
    state = {
        "python": random.getstate(),
        "torch": torch.get_rng_state(),
        # plain types only, so checkpoints load with torch.load(weights_only=True)
        "numpy": (name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))  # noqa: NPY002
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --- distributed (torchrun sets RANK, LOCAL_RANK, WORLD_SIZE) -------------------------------


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def is_distributed() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def init_distributed() -> DistInfo:
    """Join the process group torchrun prepared (NCCL on CUDA, gloo on CPU); a no-op alone."""
    if not is_distributed():
        return DistInfo()
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local_rank())
        dist.init_process_group(backend)
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank())


def versions() -> dict:
    import torchvision

    from .. import __version__

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "dfpt_core": __version__,
        "cuda": torch.version.cuda,
        "platform": platform.platform(),
    }
