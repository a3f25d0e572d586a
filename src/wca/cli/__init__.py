"""The `wca` command: a thin shell that composes the library's pieces.

Each sub-module registers its sub-commands with ``register(subparsers)`` and binds a handler
with ``parser.set_defaults(handler=fn)``; ``fn(args) -> int`` returns the exit status.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from wca import __version__

# Modules under wca.cli that contribute sub-commands, in the order --help lists them.
COMMAND_MODULES = (
    "demo",
    "evaluate",
    "extract",
    "classify",
    "describe",
    "descriptions",
    "serve",
)


class UsageError(Exception):
    """Bad input from the user: printed as one clear line, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wca",
        description="Zero-shot image classification with weighted visual-text cross alignment "
        "(Li et al., ICML 2024) and its baselines (CLIP, CLIP-E, CLIP-D, WaffleCLIP, CuPL).",
    )
    parser.add_argument("--version", action="version", version=f"wca {__version__}")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"wca.cli.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "handler"):
        parser.print_help()
        return 0
    try:
        return args.handler(args)
    except (UsageError, FileNotFoundError, ValueError, KeyError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"wca: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("wca: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
