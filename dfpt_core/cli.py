"""The `dfpt` command line: train, eval, book, bench, teachers."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def cmd_train(args: argparse.Namespace) -> int:
    from .config import load_config
    from .experiment import run

    cfg = load_config(args.config, args.overrides)  # validated before any work
    trainer = run(cfg, resume=args.resume, progress=sys.stderr.isatty() and cfg.progress)
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


def cmd_eval(args: argparse.Namespace) -> int:
    from .experiment import evaluate_checkpoint

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
    from .book import run_book

    run_book(args.scale, only=args.only, in_place=args.in_place)  # prints its own report
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from .bench import format_table, run_benchmarks

    path = run_benchmarks(args.out, only=args.only, quick=args.quick)
    print(format_table(json.loads(path.read_text())))
    print(f"\nwritten to {path}")
    return 0


def cmd_teachers(args: argparse.Namespace) -> int:
    from . import teachers

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
    train.add_argument(
        "--resume", action="store_true", help="continue from <out_dir>/<name>/checkpoints/last.pt"
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
    book.add_argument("--scale", choices=("smoke", "cpu", "full"), default="cpu")
    book.add_argument("--only", nargs="+", metavar="NN", help="notebook numbers or names")
    book.add_argument(
        "--in-place",
        action="store_true",
        help="overwrite the committed notebooks (regenerates their outputs)",
    )
    book.set_defaults(func=cmd_book)

    bench = sub.add_parser("bench", help="speed and memory benchmarks (JSON)")
    bench.add_argument("--out", type=Path, default=None, help="output folder (runs/bench)")
    bench.add_argument("--only", nargs="+", help="benchmark names")
    bench.add_argument("--quick", action="store_true", help="smoke run: batch 4, fewer repetitions")
    bench.set_defaults(func=cmd_bench)

    teach = sub.add_parser("teachers", help="the published CIFAR-100 teacher checkpoints")
    teach.add_argument("action", choices=("fetch", "list"))
    teach.add_argument("--url", default=None, help="archive URL (file:// for a local copy)")
    teach.set_defaults(func=cmd_teachers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "url", "") is None:
        from .teachers import ARCHIVE_URL

        args.url = ARCHIVE_URL
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, RuntimeError, FloatingPointError) as e:
        print(f"dfpt {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
