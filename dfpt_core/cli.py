"""The `dfpt` command line."""

from __future__ import annotations

import argparse
import sys


def cmd_book(args: argparse.Namespace) -> int:
    from .book import run_book

    run_dir = run_book(args.scale, only=args.only, in_place=args.in_place)
    print(f"book at {args.scale} scale: {run_dir / 'index.html'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dfpt", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    book = sub.add_parser("book", help="run the notebooks headless with papermill")
    book.add_argument("--scale", choices=("smoke", "cpu", "full"), default="cpu")
    book.add_argument("--only", nargs="+", metavar="NN", help="notebook numbers or names")
    book.add_argument(
        "--in-place",
        action="store_true",
        help="overwrite the committed notebooks (regenerates their outputs)",
    )
    book.set_defaults(func=cmd_book)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"dfpt {args.command}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
