"""Recipes: the scales of the project (`smoke` for CI, `cpu` for the reader's book on a laptop,
`full` for the paper's CIFAR-100 recipe on GPU servers), and multi-run recipes such as TAKD's
chain of runs."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from ..methods import hyperparameters
from .config import TrainConfig

SCALES = ("smoke", "cpu", "full")


def takd_stage_configs(
    base: TrainConfig, assistant: str | Sequence[str], kd_method: str = "kd"
) -> list[TrainConfig]:
    """The TAKD recipe as run configurations, to run in order (e.g. with `run.build.run`).

    `base` describes the final run: student, teacher (+ `teacher_checkpoint`), data, schedule,
    `out_dir`, `name`; its `method_args` are passed to every stage whose method accepts them.
    `assistant` is the TA architecture, or a chain of them from large to small. For one TA:

    1. method `kd_method` ("kd"): student = the TA, teacher = the teacher; name
       `<name>-ta1-<TA>`, so the best TA lands in `<out_dir>/<name>-ta1-<TA>/checkpoints/best.pt`
       (where the trainer writes the best student as {"model": state_dict, ...});
    2. method "takd": student = `base.student`, teacher = the teacher (for the gap metrics),
       `networks={"assistants": [{"arch": TA, "checkpoint": that best.pt}]}`; name =
       `base.name`.

    A chain [TA1, TA2, ...] inserts one "takd" stage per further TA (TA_k learns from TA_{k-1}),
    and the final stage gets the whole chain. Returns the validated configs, in order.
    """
    chain = [assistant] if isinstance(assistant, str) else list(assistant)
    if not chain:
        raise ValueError("takd_stage_configs needs at least one assistant architecture")
    if base.teacher is None:
        raise ValueError("takd_stage_configs: base.teacher is None; TAKD needs the teacher")

    def args_for(method: str) -> dict:
        valid = hyperparameters(method)
        return {k: v for k, v in base.method_args.items() if k in valid}

    def networks(assistants: list[dict]) -> dict:
        return {"assistants": [dict(a) for a in assistants]} if assistants else {}

    configs, assistants = [], []
    for k, arch in enumerate(chain, start=1):
        name = f"{base.name}-ta{k}-{arch}"
        method = kd_method if k == 1 else "takd"
        configs.append(
            dataclasses.replace(
                base,
                name=name,
                method=method,
                student=arch,
                networks=networks(assistants),
                method_args=args_for(method),
            ).validate()
        )
        best = str(Path(base.out_dir) / name / "checkpoints" / "best.pt")
        assistants.append({"arch": arch, "checkpoint": best})
    configs.append(
        dataclasses.replace(
            base,
            method="takd",
            networks=networks(assistants),
            method_args=args_for("takd"),
        ).validate()
    )
    return configs
