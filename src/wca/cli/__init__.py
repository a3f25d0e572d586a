"""The `wca` command: a thin shell that composes the library's pieces.

Each sub-module registers its sub-commands with ``register(subparsers)`` and binds a handler
with ``parser.set_defaults(handler=fn)``; ``fn(args) -> int`` returns the exit status. Parsing
imports no model, plotting or web library (``wca --help`` and argument errors answer at once):
the sub-modules import those inside their handlers.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import os
import sys
import textwrap
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

from wca import __version__
from wca.compat import renamed_flags
from wca.errors import LockStalled, RankError, SettingError
from wca.extras import MissingExtra

# Modules under wca.cli that contribute sub-commands, in the order --help lists them.
COMMAND_MODULES = (
    "demo",
    "evaluate",
    "extract",
    "classify",
    "explain",
    "serve",
    "describe",
    "descriptions",
    "models",
    "listings",
    "report",
    "reproduce",
)


def flag_hint(error: Exception, args: argparse.Namespace) -> str:
    """`` (pass --FLAG)`` when ``error`` names a setting (``error.setting``) that allows what
    failed and this command has a flag for it."""
    from wca.cli.settings import flag_of

    setting = getattr(error, "setting", None)
    flag = flag_of(setting) if setting else None
    return f" (pass {flag})" if flag and hasattr(args, flag[2:].replace("-", "_")) else ""


class UsageError(Exception):
    """Bad input from the user: printed as one clear line, exit status 2."""


class _Formatter(argparse.HelpFormatter):
    """argparse's help layout without line breaks inside hyphenated words (``hf-hub:``)."""

    def _split_lines(self, text: str, width: int) -> list[str]:
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)


class _RawFormatter(_Formatter, argparse.RawDescriptionHelpFormatter):
    """The same, with the description (its examples) as written."""


class Parser(argparse.ArgumentParser):
    """argparse's parser (and its sub-commands') with an error as one line that points to the
    command's help, instead of the whole usage."""

    FORMATTERS = {
        argparse.HelpFormatter: _Formatter,
        argparse.RawDescriptionHelpFormatter: _RawFormatter,
    }

    def __init__(self, *args, formatter_class=argparse.HelpFormatter, **kwargs) -> None:
        formatter_class = self.FORMATTERS.get(formatter_class, formatter_class)
        super().__init__(*args, formatter_class=formatter_class, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="wca",
        description="Zero-shot image classification with weighted visual-text cross alignment "
        "(Li et al., ICML 2024) and its baselines (CLIP, CLIP-E, CLIP-D, WaffleCLIP, CuPL).",
    )
    parser.add_argument("-V", "--version", action="version", version=f"wca {__version__}")
    _add_verbosity(parser, default=False)
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"wca.cli.{name}").register(subparsers)
    _remember_parsers(parser)
    return parser


def _add_verbosity(parser: argparse.ArgumentParser, default: Any) -> None:
    """``-q`` / ``-v`` before or after the command (``wca -q eval`` = ``wca eval -q``); a
    command's parser leaves them unset (SUPPRESS) so it never overrides ``wca``'s."""
    verbosity = parser.add_mutually_exclusive_group()
    verbosity.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=default,
        help="errors only: no notes, no progress bars",
    )
    verbosity.add_argument(
        "-v", "--verbose", action="store_true", default=default, help="debug messages too"
    )


def describe_os_error(error: OSError) -> str:
    """``PATH: strerror (errno NAME)``, or the error's own text when it carries no errno."""
    if error.errno is None:
        return str(error)
    where = f"{error.filename}: " if error.filename is not None else ""
    name = errno.errorcode.get(error.errno, str(error.errno))
    return f"{where}{error.strerror} (errno {name})"


def _remember_parsers(parser: argparse.ArgumentParser) -> None:
    """Let every (sub-)command know its own parser, so that a bad flag prints its usage, and
    take ``-q`` / ``-v`` after the command too."""
    parser.set_defaults(command_parser=parser)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _add_verbosity(sub, default=argparse.SUPPRESS)
                _remember_parsers(sub)


def _log_to_stderr(level: int) -> None:
    """The library's ``wca`` logger (notes, skipped methods) as ``wca: ...`` lines on stderr."""
    logger = logging.getLogger("wca")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("wca: %(message)s"))
    logger.handlers = [handler]
    logger.setLevel(level)
    logger.propagate = False


def _sub_commands(parser: argparse.ArgumentParser) -> list[str]:
    return [
        name
        for action in parser._actions
        if isinstance(action, argparse._SubParsersAction)
        for name in action.choices
    ]


_PACKAGE = str(Path(__file__).resolve().parents[1])


@contextmanager
def _warnings_as_log_lines() -> Iterator[None]:
    """The package's own warnings (a damaged cache shard recomputed...) shown as one
    ``wca: ...`` line, without Python's echo of the source line, and not at all under ``-q``
    (the ``wca`` logger's level); other libraries' warnings as Python shows them. Only the
    format changes, so the warnings stay warnings (filters, ``pytest.warns``)."""
    formatted = warnings.formatwarning

    def format_warning(message, category, filename, lineno, line=None) -> str:
        if not str(Path(filename).resolve()).startswith(_PACKAGE):
            return formatted(message, category, filename, lineno, line)
        if not logging.getLogger("wca").isEnabledFor(logging.WARNING):
            return ""
        return f"wca: {' '.join(str(message).split())}\n"

    warnings.formatwarning = format_warning
    try:
        yield
    finally:
        warnings.formatwarning = formatted


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    with _warnings_as_log_lines():
        argv = renamed_flags(sys.argv[1:] if argv is None else list(argv))
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        args.command_parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if args.quiet and args.verbose:  # one on each side of the command
        args.command_parser.error("-q and -v exclude each other")
    if not hasattr(args, "handler"):  # `wca`, or a command group without its sub-command
        commands = ", ".join(_sub_commands(args.command_parser))
        args.command_parser.error(f"no command given; choose one of {commands}")
    _log_to_stderr(logging.ERROR if args.quiet else logging.DEBUG if args.verbose else logging.INFO)
    if args.quiet and hasattr(args, "no_progress"):
        args.no_progress = True
    try:
        with _warnings_as_log_lines():
            return args.handler(args)
    except SettingError as error:  # the library names the setting; we name its flag
        from wca.cli.settings import flag_of

        print(f"wca: error: {flag_of(error.setting)}: {error.reason}", file=sys.stderr)
        return 2
    except MissingExtra as error:  # an optional part that is not installed
        print(f"wca: error: {error}", file=sys.stderr)
        return 1
    except (UsageError, FileNotFoundError, ValueError, KeyError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"wca: error: {message}{flag_hint(error, args)}", file=sys.stderr)
        return 2
    except LockStalled as error:  # another process holds a cache lock and makes no progress
        print(f"wca: error: {error}{flag_hint(error, args)}", file=sys.stderr)
        return 1
    except RankError as error:  # another torchrun rank failed or never arrived
        print(f"wca: error: {error}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `wca models | head`: the reader has had enough, nothing failed
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # for the exit's flush
        return 0
    except OSError as error:  # disk full, a directory where a file goes, no permission...
        print(f"wca: error: {describe_os_error(error)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("wca: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
