"""What several commands share: the settings' flags of an evaluation and of a run (made from
the fields by :mod:`wca.cli.settings`), ``--model``'s help, and loading the model of a command."""

from __future__ import annotations

import argparse
import logging
import textwrap

from wca.cli.settings import add_settings, flag_of, given
from wca.specs import CHECKPOINT_FILES, MODEL_FORMS, NAMED_MODELS

log = logging.getLogger("wca")
__all__ = ["CHECKPOINT_FILES", "MODEL_FORMS", "NAMED_MODELS", "flag_name"]
flag_name = flag_of  # the flag of a setting, for errors that name one


def model_help(default: str | None = None) -> str:
    """The help of one command's ``--model``: every spec form, and its own ``default``."""
    named = ", ".join(f"{name} ({what})" for name, what in NAMED_MODELS.items())
    text = (
        f"the model: {', '.join(MODEL_FORMS)}, a bare path to a {CHECKPOINT_FILES} file or "
        f"a model folder (backend inferred), or {named}; `wca models` lists them"
    )
    return f"{text} (default: {default})" if default else text


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
