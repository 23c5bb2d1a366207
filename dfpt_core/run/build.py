"""From a TrainConfig to a finished run: data, networks (with their weights), method, trainer."""

from __future__ import annotations

from pathlib import Path

import torch

from ..data import dataset_info, make_loader
from ..engine.metrics import evaluate
from ..engine.runtime import init_distributed, resolve_amp, resolve_device, seed_everything
from ..engine.trainer import Trainer, autocast_context
from ..methods import RunContext, create, method_class
from ..models import create_model
from .config import TrainConfig
from .weights import load_network


def build_networks(cfg: TrainConfig, num_classes: int) -> dict:
    """Keyword arguments for `methods.create`: the student, and exactly the networks the method
    `requires` ("teacher" from teacher/teacher_checkpoint/teacher_args, every other role from
    `cfg.networks`), loaded in that order."""
    if cfg.student_checkpoint is None:
        student = create_model(
            cfg.student, num_classes=num_classes, in_chans=cfg.in_chans, **cfg.student_args
        )
    else:
        student = load_network(
            cfg.student,
            cfg.student_checkpoint,
            num_classes,
            cfg.in_chans,
            "student",
            finetune=True,
            **cfg.student_args,
        )
    nets = {"student": student}
    for role in method_class(cfg.method).requires:
        if role == "teacher":
            if cfg.teacher is None:
                raise ValueError(f"method {cfg.method!r} needs `teacher` (a model name)")
            nets["teacher"] = load_network(
                cfg.teacher,
                cfg.teacher_checkpoint,
                num_classes,
                cfg.in_chans,
                "teacher",
                **cfg.teacher_args,
            )
        else:
            nets[role] = load_role(cfg, role, num_classes)
    return nets


def load_role(cfg: TrainConfig, role: str, num_classes: int) -> list:
    """The networks `cfg.networks` gives for `role` (a role in the method's `requires` other
    than "teacher"), loaded; a clear error when the config gives none."""
    specs = cfg.networks_of(role)
    if not specs:
        raise ValueError(
            f"method {cfg.method!r} needs networks.{role}: give them in the config as "
            f"`networks: {{{role}: [{{arch: <model>, checkpoint: <path>}}, ...]}}` (arch "
            "defaults to the teacher's)"
        )
    return [
        load_network(
            spec["arch"],
            spec["checkpoint"],
            num_classes,
            cfg.in_chans,
            f"networks.{role}[{i}]",
            **spec["args"],
        )
        for i, spec in enumerate(specs)
    ]


def build(cfg: TrainConfig):
    """(distiller, train loader, test loader, validation loader or None, device, dist info)
    for `cfg`, seeded."""
    dist = init_distributed()
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed)
    info = dataset_info(cfg.dataset)
    common = dict(
        root=cfg.data_root,
        download=cfg.download,
        in_chans=cfg.in_chans,
        seed=cfg.seed,
        device=device,
        fast=None if cfg.fast_loader else False,
        num_workers=cfg.num_workers,
        channels_last=cfg.channels_last,
    )
    train_loader = make_loader(
        cfg.dataset,
        True,
        cfg.batch_size,
        limit=cfg.limit_train,
        val_size=cfg.val_size,
        rank=dist.rank,
        world_size=dist.world_size,
        **common,
    )
    test_loader = make_loader(
        cfg.dataset, False, cfg.eval_batch_size, limit=cfg.limit_test, **common
    )
    val_loader = None
    if cfg.val_size:
        val_loader = make_loader(
            cfg.dataset,
            False,
            cfg.eval_batch_size,
            val_size=cfg.val_size,
            validation=True,
            **common,
        )
    context = RunContext(
        num_classes=info.num_classes,
        input_size=(cfg.in_chans, info.image_size, info.image_size),
        epochs=cfg.epochs,
    )
    nets = build_networks(cfg, info.num_classes)
    distiller = create(cfg.method, **nets, context=context, **cfg.method_args)
    return distiller, train_loader, test_loader, val_loader, device, dist


def run(
    cfg: TrainConfig,
    resume: bool = False,
    callbacks=(),
    progress: bool | None = None,
    overwrite: bool = False,
) -> Trainer:
    """Train `cfg` into `<out_dir>/<name>/` and return the finished Trainer. `callbacks` are
    Trainer callbacks (on_train_start / on_step_end / on_epoch_end / on_train_end), e.g. the
    workbook's live dashboard or `engine.probe.PathProbe`. Where a run exists: `resume`
    continues it, `overwrite` starts it again (see `Trainer.fit`)."""
    distiller, train_loader, test_loader, val_loader, device, dist = build(cfg)
    run_dir = Path(cfg.out_dir) / cfg.name
    trainer = Trainer(
        distiller,
        train_loader,
        test_loader,
        cfg,
        val_loader=val_loader,
        run_dir=run_dir,
        callbacks=list(callbacks),
        dist=dist,
        device=device,
        progress=progress,
    )
    trainer.fit(resume=resume, overwrite=overwrite)
    return trainer


def evaluate_checkpoint(
    arch: str,
    checkpoint,
    dataset: str,
    in_chans: int = 3,
    limit: int | None = None,
    root=None,
    device: str = "auto",
    seed: int = 0,
    batch_size: int = 256,
    amp: str = "none",
    channels_last: bool = False,
    **model_args,
) -> dict:
    """Test metrics of one network (`student_top1`, `student_top5`, `student_pt`) from any
    checkpoint spec `load_network` accepts; `amp` and `channels_last` as in a run's config, for
    the numbers its Trainer recorded."""
    info = dataset_info(dataset)
    dev = resolve_device(device)
    model = load_network(arch, str(checkpoint), info.num_classes, in_chans, "model", **model_args)
    loader = make_loader(
        dataset,
        False,
        batch_size,
        root=root,
        in_chans=in_chans,
        limit=limit,
        seed=seed,
        device=dev,
        channels_last=channels_last,
    )
    distiller = create("ce", student=model.to(dev))
    if channels_last:
        distiller.to(memory_format=torch.channels_last)
    return evaluate(distiller, loader, autocast=autocast_context(dev, resolve_amp(amp, dev)))
