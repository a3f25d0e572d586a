"""What several commands share: the settings' flags of an evaluation and of a run (made from
the fields by :mod:`wca.cli.settings`), ``--model``'s help, and loading the model of a command."""

from __future__ import annotations

import argparse
import logging
import textwrap

from wca.cli.settings import add_settings, flag_of, given
from wca.specs import CHECKPOINT_FILES, GRAMMAR, MODEL_FORMS, NAMED_MODELS

log = logging.getLogger("wca")
__all__ = ["CHECKPOINT_FILES", "MODEL_FORMS", "NAMED_MODELS", "flag_name"]
flag_name = flag_of  # the flag of a setting, for errors that name one


def model_help(default: str | None = None) -> str:
    """The help of one command's ``--model``: every spec form, and its own ``default``."""
    text = f"the model: {GRAMMAR}; `wca models` lists them"
    return f"{text} (default: {default})" if default else text


def model_option(parser: argparse.ArgumentParser, help_text: str) -> None:
    """``--model SPEC`` and clip_benchmark's ``--pretrained TAG`` (the field of
    :class:`wca.config.EvalConfig`) of a command that loads one model."""
    from wca.config import EvalConfig

    parser.add_argument("--model", metavar="SPEC", help=help_text)
    add_settings(parser, EvalConfig, names=("pretrained",))


def model_spec(args: argparse.Namespace) -> str | None:
    """The spec of ``--model`` and ``--pretrained`` (:func:`wca.specs.with_pretrained`)."""
    from wca.specs import with_pretrained

    if args.pretrained and not args.model:
        raise ValueError("--pretrained goes with --model ARCH (e.g. --model ViT-B-32)")
    return with_pretrained(args.model, args.pretrained) if args.model else None


def describe(paragraph: str, examples: str) -> str:
    """A sub-command description: the paragraph wrapped for the terminal, examples verbatim."""
    return textwrap.fill(paragraph, 78) + "\n\nexamples:\n  " + examples


def evaluation_settings(parser: argparse.ArgumentParser, groups, *, repeatable: bool) -> None:
    """The flags of :class:`wca.config.EvalConfig` in ``groups`` and of every
    :class:`wca.options.RunOptions` field."""
    from wca.config import EvalConfig
    from wca.configs import DATASET_DEFAULTS
    from wca.options import RunOptions

    add_settings(parser, EvalConfig, groups, repeatable=repeatable, per_dataset=DATASET_DEFAULTS)
    add_settings(parser, RunOptions)


SPEED = ("device", "precision", "batch_size")  # of the commands that classify a few images


def run_options(args: argparse.Namespace, names=None, **values):
    """The :class:`wca.options.RunOptions` of the flags given (those of ``names``: a command
    whose other flags mean something else) and ``values``."""
    from wca.options import RunOptions

    return RunOptions(**{**given(args, RunOptions, names), **values})


def speed_settings(parser: argparse.ArgumentParser) -> None:
    """``--device``, ``--precision`` and ``--batch-size`` of the commands that load one model
    for a few images (classify, explain, serve)."""
    from wca.options import RunOptions

    add_settings(parser, RunOptions, names=SPEED)


def load_encoder(args: argparse.Namespace, spec: str):
    """The encoder of ``spec`` with ``--device`` (this rank's under torchrun), ``--precision``
    and ``--batch-size``."""
    from wca.encoders import load_encoder
    from wca.features.distributed import rank_device

    options = run_options(args, names=(*SPEED, "progress"))
    encoder = load_encoder(
        spec,
        device=rank_device(options.device),
        precision=options.precision,
        batch_size=options.batch_size,
    )
    encoder.progress = options.progress
    return encoder
