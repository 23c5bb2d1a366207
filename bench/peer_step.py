"""This project's KD step against a KD step in the style of the public CIFAR distillation
codebases (RepDistiller, mdistiller), on the paper's pair resnet32x4 -> resnet8x4 (100 classes,
3x32x32), all in this one process, timed round-robin, median after warm-up:

- `peer`: a plain loop over the same zoo models as those repositories write it: fp32, eager,
  NCHW, the teacher in eval mode under torch.no_grad(), loss = 0.1 CE +
  0.9 F.kl_div(F.log_softmax(s / T, 1), F.softmax(t / T, 1), reduction="batchmean") * T * T
  with T = 4, SGD momentum 0.9, weight decay 5e-4 over the student;
- `ours_fp32`: this project's `kd` step as the Trainer takes it, same settings (fp32, NCHW);
- `ours_fastest`: the same `kd` step with the Trainer's fastest CPU settings (channels_last, and
  bf16 autocast where the device has native bf16);
- `teacher_peer`, `teacher_ours_fp32`, `teacher_ours_fastest`: the teacher's forward alone, as
  each of the above runs it.

No peer code is needed: the reference is the loop below over this project's models."""

import statistics

import torch
import torch.nn.functional as F
from _common import (
    FP32,
    LR,
    MOMENTUM,
    PAIRS,
    WEIGHT_DECAY,
    batch,
    build,
    fastest_setting,
    interleaved_seconds,
    pair_settings,
    parse_args,
    teacher,
    train_step,
    trainer_malloc,
    write,
)

from dfpt_core.engine.runtime import resolve_device
from dfpt_core.engine.trainer import autocast_context
from dfpt_core.models import create_model

PAIR = next(p for p in PAIRS if p.name == "resnet32x4-resnet8x4")
T, CE_WEIGHT, KD_WEIGHT = 4.0, 0.1, 0.9


def peer_step(images: torch.Tensor, labels: torch.Tensor, device: torch.device):
    """The public codebases' KD step (see the module docstring); returns (step, teacher fwd)."""
    t_model = teacher(PAIR).to(device).eval()
    torch.manual_seed(0)
    student = create_model(PAIR.student, num_classes=PAIR.num_classes, in_chans=PAIR.in_chans)
    student = student.to(device).train()
    opt = torch.optim.SGD(student.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)

    def step() -> None:
        with torch.no_grad():
            logit_t = t_model(images)
        logit_s = student(images)
        loss_kd = F.kl_div(
            F.log_softmax(logit_s / T, dim=1), F.softmax(logit_t / T, dim=1), reduction="batchmean"
        )
        loss = CE_WEIGHT * F.cross_entropy(logit_s, labels) + KD_WEIGHT * loss_kd * T * T
        opt.zero_grad()
        loss.backward()
        opt.step()

    def teacher_forward() -> None:
        with torch.no_grad():
            t_model(images)

    return step, teacher_forward


def ours_teacher_forward(images: torch.Tensor, setting, device: torch.device):
    """The kd distiller's teacher forward (Distiller.teacher_logits) under `setting`."""
    distiller = build("kd", PAIR, device)
    if setting.channels_last:
        distiller.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    autocast = autocast_context(device, setting.amp)

    def forward() -> None:
        with autocast:
            distiller.teacher_logits(images)

    return forward


def main():
    args = parse_args(__doc__)
    device = resolve_device("auto")
    common = pair_settings(args.quick)
    settings = {"batch": common["batch"], "pair": {"name": PAIR.name, **common["pairs"][PAIR.name]}}
    settings.update(warmup=0 if args.quick else 3, rounds=1 if args.quick else 20)
    settings["cpu_malloc"] = trainer_malloc(device)
    fastest = fastest_setting(device)
    settings["fastest"] = {"name": fastest.name, "channels_last": fastest.channels_last}
    settings["fastest"]["amp"] = fastest.amp
    settings["peer"] = {"temperature": T, "ce_weight": CE_WEIGHT, "kd_weight": KD_WEIGHT}
    images, labels = batch(PAIR, settings["batch"], device)
    peer, teacher_peer = peer_step(images, labels, device)
    fns = {
        "peer": peer,
        "ours_fp32": train_step(build("kd", PAIR, device), images, labels, FP32),
        "ours_fastest": train_step(build("kd", PAIR, device), images, labels, fastest),
        "teacher_peer": teacher_peer,
        "teacher_ours_fp32": ours_teacher_forward(images, FP32, device),
        "teacher_ours_fastest": ours_teacher_forward(images, fastest, device),
    }
    seconds = interleaved_seconds(fns, settings["rounds"], settings["warmup"], device)
    results = {
        k: {
            "step_ms": round(1e3 * statistics.median(s), 3),
            "step_ms_all": [round(1e3 * t, 3) for t in s],
        }
        for k, s in seconds.items()
    }
    write(args.out, settings, results)


if __name__ == "__main__":
    main()
