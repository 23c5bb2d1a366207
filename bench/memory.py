"""Peak memory of a training step: KD vs DFPT-KD vs DFPT-KDt (the paper notes DFPT's prompt path
back-propagates through the whole frozen teacher). CUDA: max_memory_allocated; CPU: the growth
of the process's peak resident set, each method measured in a fresh process."""

import subprocess
import sys

import torch
from _common import parse_args, write

CHILD = """
import resource, sys, torch
sys.path.insert(0, "bench")
from train_step import step_fn
from dfpt_core.runtime import resolve_device
device = resolve_device("auto")
step = step_fn(sys.argv[1], "none", False, device, batch=int(sys.argv[2]))
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
if device.type == "cuda":
    torch.cuda.reset_peak_memory_stats()
for _ in range(3):
    step()
if device.type == "cuda":
    print(torch.cuda.max_memory_allocated() / 2**20)
else:
    print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024)
"""


def main():
    args = parse_args(__doc__)
    batch = 64 if args.quick else 128
    results = []
    for method in ("kd", "dfpt_kd", "dfpt_kdt"):
        out = subprocess.run(
            [sys.executable, "-c", CHILD, method, str(batch)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.split()[-1]
        results.append(
            {
                "method": method,
                "teacher": "resnet56",
                "student": "resnet8",
                "batch": batch,
                "peak_mib_during_steps": round(float(out), 1),
                "device": "cuda" if torch.cuda.is_available() else "cpu",
            }
        )
    write(args.out, results)


if __name__ == "__main__":
    main()
