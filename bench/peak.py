"""The machine's measured GEMM peak: GFLOP/s of a square matrix product (n x n @ n x n = 2 n^3
FLOPs) with torch's current thread count, median of several after warm-up, in fp32 and, where the
device computes bf16 natively (dfpt_core.engine.runtime.bf16_evidence, recorded), in bf16. The
training-step benchmarks state their achieved GFLOP/s as a fraction of these."""

import statistics

import torch
from _common import interleaved_seconds, parse_args, write

from dfpt_core.engine.runtime import bf16_evidence, resolve_device

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def matmul(n: int, dtype: torch.dtype, device: torch.device):
    g = torch.Generator().manual_seed(0)
    a, b = (torch.randn(n, n, generator=g).to(device, dtype) for _ in range(2))
    out = torch.empty(n, n, dtype=dtype, device=device)
    return lambda: torch.mm(a, b, out=out)


def gemm_seconds(n: int, dtypes: dict, device: torch.device, rounds: int, warmup: int) -> dict:
    """Seconds of an n x n matrix product per dtype ({name: torch dtype}), interleaved."""
    fns = {k: matmul(n, dtype, device) for k, dtype in dtypes.items()}
    return interleaved_seconds(fns, rounds, warmup, device)


def gflops_per_s(n: int, seconds: float) -> float:
    """The rate of an n x n matrix product (2 n^3 FLOPs) that took `seconds`."""
    return round(2 * n**3 / seconds / 1e9, 3)


def main():
    args = parse_args(__doc__)
    device = resolve_device("auto")
    settings = {"size": 512 if args.quick else 2048, "warmup": 1 if args.quick else 3}
    settings["rounds"] = 2 if args.quick else 10
    settings["threads"] = torch.get_num_threads()
    evidence = bf16_evidence(device)
    results = {"native_bf16": evidence["native"], "bf16_evidence": evidence}
    dtypes = {k: v for k, v in DTYPES.items() if k == "fp32" or evidence["native"]}
    n = settings["size"]
    seconds = gemm_seconds(n, dtypes, device, settings["rounds"], settings["warmup"])
    for k, s in seconds.items():
        results[k] = {
            "gflops_per_s": gflops_per_s(n, statistics.median(s)),
            "gflops_per_s_all": [gflops_per_s(n, t) for t in s],
        }
    if "bf16" not in results:
        results["bf16"] = {"skipped": f"no native bf16 on {device} (see bf16_evidence)"}
    write(args.out, settings, results)


if __name__ == "__main__":
    main()
