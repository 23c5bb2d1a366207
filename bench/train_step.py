"""Training throughput (images/s) of one optimizer step for KD, DFPT-KD and DFPT-KDt on the
book's cpu-scale pair, in fp32, bf16 autocast and channels_last."""

import torch
from _common import parse_args, timed, write

from dfpt_core.methods import create
from dfpt_core.models import create_model
from dfpt_core.runtime import resolve_device
from dfpt_core.train import autocast_context


def step_fn(method, amp, channels_last, device, batch=64):
    torch.manual_seed(0)
    teacher = create_model("resnet56", num_classes=10, in_chans=1)
    student = create_model("resnet8", num_classes=10, in_chans=1)
    kw = {"input_size": (1, 32, 32)} if method.startswith("dfpt") else {}
    distiller = create(method, student=student, teacher=teacher, **kw).to(device).train()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    distiller.to(memory_format=fmt)
    opt = torch.optim.SGD(distiller.param_groups(0.05, 5e-4), lr=0.05, momentum=0.9)
    x = torch.randn(batch, 1, 32, 32, device=device).contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (batch,), device=device)

    def step():
        with autocast_context(device, amp):
            _, losses = distiller(x, y)
        opt.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        opt.step()

    return step


def main():
    args = parse_args(__doc__)
    device = resolve_device("auto")
    repeats = 3 if args.quick else 10
    results = []
    for method in ("kd", "dfpt_kd", "dfpt_kdt"):
        for amp, channels_last in (("none", False), ("bf16", False), ("none", True)):
            seconds = timed(step_fn(method, amp, channels_last, device), repeats)
            results.append(
                {
                    "method": method,
                    "teacher": "resnet56",
                    "student": "resnet8",
                    "amp": amp,
                    "channels_last": channels_last,
                    "batch": 64,
                    "device": str(device),
                    "images_per_s": round(64 / seconds, 1),
                }
            )
    write(args.out, results)


if __name__ == "__main__":
    main()
