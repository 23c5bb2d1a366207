"""The `dfpt` command line: train, eval, teachers, and (with the `[book]` extra) book.

The top layer: it drives the core (run/, engine/) and, for `book` and the training curves of
`train`, the workbook layer when it is installed."""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path

from .run.recipes import SCALES


def cmd_train(args: argparse.Namespace) -> int:
    from .run.build import run
    from .run.config import load_config

    cfg = load_config(args.config, args.overrides)  # validated before any work
    trainer = run(
        cfg,
        resume=args.resume,
        overwrite=args.overwrite,
        callbacks=curves_writer(cfg),
        progress=sys.stderr.isatty() and cfg.progress,
    )
    if trainer.is_main:
        print(
            json.dumps(
                {
                    "run_dir": str(trainer.run_dir),
                    "final": trainer.history[-1],
                    "best_student_top1": trainer.best["student_top1"],
                },
                indent=2,
            )
        )
    return 0


def curves_writer(cfg) -> list:
    """The workbook's dashboard in headless mode (it writes curves.html into the run folder),
    when the `[book]` extra (plotly) is installed; nothing otherwise."""
    try:
        from .workbook.viz import Dashboard
    except ImportError:
        return []
    return [Dashboard(live=False, title=f"{cfg.name}: {cfg.method}", display=False)]


def workbook_book():
    """The workbook's book runner; a clear error when the `[book]` extra is not installed."""
    try:
        from .workbook import book
    except ImportError as e:
        raise RuntimeError(
            f"`dfpt book` needs the workbook layer ({e.name} is missing): "
            "pip install -e '.[book]' (the Makefile installs it)"
        ) from e
    return book


def cmd_eval(args: argparse.Namespace) -> int:
    from .run.build import evaluate_checkpoint

    metrics = evaluate_checkpoint(
        args.model,
        args.checkpoint,
        args.dataset,
        args.in_chans,
        args.limit,
        args.data_root,
        args.device,
        batch_size=args.batch_size,
    )
    print(
        json.dumps(
            {
                "model": args.model,
                "checkpoint": str(args.checkpoint),
                "dataset": args.dataset,
                **metrics,
            },
            indent=2,
        )
    )
    return 0


def cmd_book(args: argparse.Namespace) -> int:
    # prints its own progress and report
    workbook_book().run_book(args.scale, only=args.only, in_place=args.in_place)
    return 0


def cmd_teachers(args: argparse.Namespace) -> int:
    from .run import weights as teachers

    if args.action == "fetch":
        found = teachers.fetch(args.url)
        print(f"verified and installed: {', '.join(found)} in {teachers.teachers_dir()}")
    else:
        have = teachers.installed()
        for arch in teachers.PUBLISHED:
            print(f"{arch:12s} {have.get(arch, '(not fetched)')}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dfpt", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train a teacher or distil a student from a config")
    train.add_argument("--config", type=Path, help="YAML config (see configs/)")
    train.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="override config keys, e.g. epochs=3 method_args.beta=2",
    )
    again = train.add_mutually_exclusive_group()
    again.add_argument(
        "--resume", action="store_true", help="continue from <out_dir>/<name>/checkpoints/last.pt"
    )
    again.add_argument(
        "--overwrite", action="store_true", help="start again where a run of that name exists"
    )
    train.set_defaults(func=cmd_train)

    ev = sub.add_parser("eval", help="test accuracy of a checkpoint")
    ev.add_argument("--model", required=True)
    ev.add_argument("--checkpoint", required=True, type=Path)
    ev.add_argument("--dataset", required=True)
    ev.add_argument("--data-root")
    ev.add_argument("--in-chans", type=int, default=3)
    ev.add_argument("--limit", type=int)
    ev.add_argument("--batch-size", type=int, default=256)
    ev.add_argument("--device", default="auto")
    ev.set_defaults(func=cmd_eval)

    book = sub.add_parser("book", help="run the notebooks headless with papermill")
    book.add_argument("--scale", choices=SCALES, default="cpu")
    book.add_argument("--only", nargs="+", metavar="NN", help="notebook numbers or names")
    book.add_argument(
        "--in-place",
        action="store_true",
        help="overwrite the committed notebooks (regenerates their outputs)",
    )
    book.set_defaults(func=cmd_book)

    teach = sub.add_parser("teachers", help="the published CIFAR-100 teacher checkpoints")
    teach.add_argument("action", choices=("fetch", "list"))
    teach.add_argument("--url", default=None, help="archive URL (file:// for a local copy)")
    teach.set_defaults(func=cmd_teachers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "url", "") is None:
        from .run.weights import ARCHIVE_URL

        args.url = ARCHIVE_URL
    try:
        return args.func(args)
    except (ValueError, OSError, RuntimeError, FloatingPointError) as e:
        print(f"dfpt {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:  # RunInterrupted has saved a checkpoint and said where
        return 128 + getattr(e, "signum", signal.SIGINT)


if __name__ == "__main__":
    sys.exit(main())
