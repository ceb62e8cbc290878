"""`hyvl` entry point.

Each verb lives in its own module ``hyvl.cli.<verb>`` exposing
``add_parser(subparsers)`` (which registers the verb and sets ``func``) so that
``hyvl --help`` imports nothing heavy: verb modules import torch and friends
inside their ``run`` functions.
"""

from __future__ import annotations

import argparse
import importlib
import sys

import hyvl

# Order is the order shown in --help.
VERBS = ["demo", "train", "eval", "data", "index", "retrieve", "traverse", "viz", "bench"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hyvl",
        description="Train, evaluate and use hyperbolic vision-language models (MERU, HyCoCLIP, CLIP).",
    )
    parser.add_argument("--version", action="version", version=f"hyvl {hyvl.__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for verb in VERBS:
        try:
            module = importlib.import_module(f"hyvl.cli.{verb}")
        except ModuleNotFoundError as err:
            if err.name == f"hyvl.cli.{verb}":
                continue  # verb not built yet in this checkout
            raise
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        result = args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except hyvl_errors() as err:
        print(f"hyvl {args.verb}: error: {err}", file=sys.stderr)
        return 2
    return int(result or 0)


def hyvl_errors() -> tuple[type[BaseException], ...]:
    """Errors that are the user's input being wrong: print the message, no traceback."""
    from hyvl.errors import HyvlError

    return (HyvlError,)


if __name__ == "__main__":
    sys.exit(main())
