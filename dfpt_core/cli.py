"""The `dfpt` command line: train, config, eval, teachers, and (with the `[book]` extra) book.

The top layer: it drives the core (run/, engine/) and, for `book` and the training curves of
`train`, the workbook layer when it is installed."""

from __future__ import annotations

import argparse
import dataclasses
import json
import signal
import sys
import textwrap
from pathlib import Path

from .run.recipes import PAIR_METHODS, ROLES, SCALES


def selected(args: argparse.Namespace):
    """The run that `--config FILE` or `--scale/--pair/--method` (or `--role teacher`) names,
    with the `key=value` overrides: (its validated TrainConfig, the values stated by the file or
    the recipe, notes on what the run is for)."""
    from .run.config import make_config, merge, parse_overrides, read_yaml
    from .run.recipes import PAIRS, pair_notes, pair_values

    table = (args.scale, args.pair, args.method)
    if args.config is not None:
        if any(v is not None for v in table) or args.role != "student":
            raise ValueError("give either --config FILE or --scale/--pair/--method, not both")
        values = merge(read_yaml(args.config), parse_overrides(args.overrides))
        notes = [f"Resolved from {args.config}."]
    elif args.scale is None or args.pair is None:
        raise ValueError(
            f"give --config FILE, or a run of the paper's table: --scale ({', '.join(SCALES)}), "
            f"--pair ({', '.join(PAIRS)}) and --method ({', '.join(PAIR_METHODS)}) "
            "or --role teacher"
        )
    else:
        values = pair_values(args.scale, args.pair, args.method, args.role, args.overrides)
        notes = pair_notes(args.scale, args.pair, args.method, args.role)
    return make_config(values), values, notes  # validated before any work


def command_line(args: argparse.Namespace) -> str:
    """The `dfpt <command>` call that `args` came from, in canonical form."""
    words = ["dfpt", args.command]
    if args.config is not None:
        words += ["--config", str(args.config)]
    for option in ("scale", "pair", "method"):
        if getattr(args, option) is not None:
            words += [f"--{option}", getattr(args, option)]
    if args.role != "student":
        words += ["--role", args.role]
    return " ".join(words + list(args.overrides))


def cmd_train(args: argparse.Namespace) -> int:
    from .run.build import run

    cfg = selected(args)[0]
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
                    "selection": trainer.selection,
                    "selected_epoch": trainer.best["epoch"],
                    "selected_student_top1": trainer.best["student_top1"],
                },
                indent=2,
            )
        )
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    """Print the resolved run as a YAML config file (what it is for as comments on top), or
    the table of pairs with `--list`."""
    import yaml

    from .run.config import TrainConfig

    if args.list:
        print(pair_listing(args.scale or "full"))
        return 0
    cfg, values, notes = selected(args)
    ordered = {
        f.name: getattr(cfg, f.name) for f in dataclasses.fields(TrainConfig) if f.name in values
    }
    head = [command_line(args), *notes, "Train it: dfpt train --config <this file> [key=value ...]"]
    for line in head:
        print(textwrap.fill(line, 98, initial_indent="# ", subsequent_indent="# "))
    print(yaml.safe_dump(ordered, sort_keys=False, default_flow_style=None), end="")
    return 0


def pair_listing(scale: str) -> str:
    """The paper's pairs with their choices at `scale` and their published top-1 %."""
    from .run.recipes import pair_table

    rows = pair_table(scale)
    width = max(len(r["pair"]) for r in rows)
    lines = [
        f"{scale} scale; top-1 % published on CIFAR-100",
        f"{'pair':<{width}}  {'lr':>5}  {'dkd beta':>8}  {'teacher':>7} {'alone':>6} {'kd':>6} "
        f"{'dkd':>6} {'dfpt_kd':>7} {'dfpt_kdt':>8}  teacher_checkpoint",
    ]
    for r in rows:
        lines.append(
            f"{r['pair']:<{width}}  {r['lr']:>5g}  {r['dkd_beta']:>8g}  {r['top1_teacher']:>7.2f} "
            f"{r['top1_student']:>6.2f} {r['top1_kd']:>6.2f} {r['top1_dkd']:>6.2f} "
            f"{r['top1_dfpt_kd']:>7.2f} {r['top1_dfpt_kdt']:>8.2f}  {r['teacher_checkpoint']}"
        )
    return "\n".join(lines)


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
    if args.show_params:
        import yaml

        params = workbook_book().load_params(args.scale)
        print(yaml.safe_dump(params, sort_keys=False, default_flow_style=None), end="")
        return 0
    # prints its own progress and report
    workbook_book().run_book(
        args.scale,
        only=args.only,
        in_place=args.in_place,
        jobs=args.jobs,
        devices=args.devices,
        retrain=args.retrain,
        run_jobs=args.run_jobs,
    )
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


def add_selection(parser: argparse.ArgumentParser) -> None:
    """The options that name a run: a config file, or a run of the paper's table."""
    parser.add_argument("--config", type=Path, help="a YAML config file (`base:` inheritance)")
    parser.add_argument(
        "--scale", help=f"a run of the paper's table at this scale: {', '.join(SCALES)}"
    )
    parser.add_argument(
        "--pair", help="<teacher>-<student>, e.g. resnet56-resnet20 (dfpt config --list)"
    )
    parser.add_argument("--method", help=f"one of the table's: {', '.join(PAIR_METHODS)}")
    parser.add_argument(
        "--role",
        choices=ROLES,
        default="student",
        help="teacher: train the pair's teacher with cross-entropy (default: distil the student)",
    )
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="override config keys, e.g. epochs=3 method_args.beta=2",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dfpt", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser(
        "train", help="train a run of the paper's table (--scale/--pair/--method) or a config file"
    )
    add_selection(train)
    again = train.add_mutually_exclusive_group()
    again.add_argument(
        "--resume", action="store_true", help="continue from <out_dir>/<name>/checkpoints/last.pt"
    )
    again.add_argument(
        "--overwrite", action="store_true", help="start again where a run of that name exists"
    )
    train.set_defaults(func=cmd_train)

    config = sub.add_parser(
        "config", help="print a run's resolved config as YAML (to save and edit), or --list pairs"
    )
    add_selection(config)
    config.add_argument(
        "--list", action="store_true", help="the paper's pairs with their choices at --scale"
    )
    config.set_defaults(func=cmd_config)

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
        help="overwrite the committed notebooks whose default scale is --scale (regenerates "
        "their outputs: at cpu scale, replayed from the shipped runs)",
    )
    book.add_argument(
        "--retrain",
        action="store_true",
        help="train every run again, shipped ones included, into runs/book-<scale>/cache-retrain/",
    )
    book.add_argument(
        "--run-jobs",
        type=int,
        metavar="N",
        help="runs of one notebook's grid trained at once (the notebooks' `jobs` parameter)",
    )
    book.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="notebooks run at once, in worker processes (several may share a GPU)",
    )
    book.add_argument(
        "--devices",
        nargs="+",
        metavar="ID",
        help="CUDA devices the workers share out, worker k on device k mod len (e.g. 0 1 2 3)",
    )
    book.add_argument(
        "--show-params",
        action="store_true",
        help="print the scale's preset (its recipe and book/params/<scale>.yaml) as YAML",
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
