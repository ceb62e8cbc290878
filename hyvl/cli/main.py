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
VERBS = [
    "demo",
    "train",
    "config",
    "eval",
    "data",
    "index",
    "retrieve",
    "traverse",
    "viz",
    "explore",
    "export",
    "bench",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hyvl",
        description="Train, evaluate and use hyperbolic vision-language models (MERU, HyCoCLIP, CLIP).",
    )
    parser.add_argument("--version", action="version", version=f"hyvl {hyvl.__version__}")
    parser.add_argument(
        "--debug",
        action="store_true",
        help="show Python tracebacks (by default an error is one line; also accepted after VERB)",
    )
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for verb in VERBS:
        try:
            module = importlib.import_module(f"hyvl.cli.{verb}")
        except ModuleNotFoundError as err:
            if err.name == f"hyvl.cli.{verb}":
                continue  # verb not built yet in this checkout
            raise
        module.add_parser(sub)
    show_defaults(parser)
    return parser


class DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """argparse's defaults formatter: every option with a default shows it as
    ``(default: VALUE)``; quiet only where the default says nothing (None, an off flag), whose
    help text then says what happens when the option is not given."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        quiet = action.default is None or action.default is False  # (0 == False: use `is`)
        if quiet or action.default == argparse.SUPPRESS or "%(default)" in text:
            return text
        return super()._get_help_string(action)


class RawDefaultsFormatter(argparse.RawDescriptionHelpFormatter, DefaultsFormatter):
    """The same for verbs whose description and epilog are laid out by hand (examples)."""


def show_defaults(parser: argparse.ArgumentParser) -> None:
    """Every parser under ``parser`` shows its defaults in --help (set here once, not per verb)."""
    raw = issubclass(parser.formatter_class, argparse.RawDescriptionHelpFormatter)
    parser.formatter_class = RawDefaultsFormatter if raw else DefaultsFormatter
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                show_defaults(child)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # --debug is accepted anywhere on the line, not only before the verb, as users add it last
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        from hyvl.cli.common import check_outputs

        check_outputs(args)  # where the results go, before any of the work
        result = args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        if debug:
            raise
        return report(args.verb, err)
    return int(result or 0)


def report(verb: str, err: Exception) -> int:
    """One line on stderr instead of a traceback; the exit code says whose fault it was.

    2: the input or the machine (a HyvlError, a file that cannot be read or written, a full
    disk); 1: anything else, which is a hyvl bug: rerun with --debug for the traceback.
    """
    from hyvl.errors import HyvlError

    if isinstance(err, (HyvlError, OSError)):
        print(f"hyvl {verb}: error: {err}", file=sys.stderr)
        return 2
    first = str(err).splitlines()[0] if str(err) else ""
    print(
        f"hyvl {verb}: internal error: {type(err).__name__}: {first} "
        "(rerun with --debug for the traceback, and please report it)",
        file=sys.stderr,
    )
    return 1


if __name__ == "__main__":
    sys.exit(main())
