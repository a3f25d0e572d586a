"""What classify and explain read and build: image files and folders (every format PIL
decodes), class names, the crops of the classifier, and the classifier itself."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from wca.cli import UsageError
from wca.cli.options import load_encoder, log, model_spec, run_options
from wca.cli.settings import add_settings, given


def class_options(parser: argparse.ArgumentParser) -> None:
    """``--classes a,b`` or ``--classes-file FILE`` (classify, explain)."""
    names = parser.add_mutually_exclusive_group(required=True)
    names.add_argument("--classes", help="comma-separated class names")
    names.add_argument(
        "--classes-file",
        type=Path,
        metavar="FILE",
        help="class names: JSON list or one name per line ('#' lines are comments)",
    )


def read_classes(args: argparse.Namespace) -> list[str]:
    """The class names of :func:`class_options`; at least two."""
    from wca.descriptions import load_classnames

    if args.classes is not None:
        classnames = [name.strip() for name in args.classes.split(",") if name.strip()]
    else:
        classnames = load_classnames(args.classes_file)
    if len(classnames) < 2:
        raise UsageError("give at least two classes (--classes a,b or --classes-file FILE)")
    return classnames


# Formats PIL identifies but cannot decode by itself: EPS needs Ghostscript, MPEG is read for
# its header only (stub formats, e.g. HDF5 and GRIB, are left out by their class).
UNDECODED_FORMATS = ("EPS", "MPEG")


def image_suffixes() -> frozenset[str]:
    """Every file suffix PIL opens and decodes (torchvision's image extensions, .gif, .jfif,
    .ico, .avif...), lower case."""
    from PIL import Image, ImageFile

    Image.init()
    return frozenset(
        suffix
        for suffix, format_id in Image.registered_extensions().items()
        if format_id in Image.OPEN
        and format_id not in UNDECODED_FORMATS
        and not (
            isinstance(factory := Image.OPEN[format_id][0], type)
            and issubclass(factory, ImageFile.StubImageFile)
        )
    )


def image_paths(arguments: list[Path]) -> list[Path]:
    """The image files named, a folder standing for every image file under it (sorted). What a
    folder holds besides (other files, broken links) is counted in one line, named at -v."""
    suffixes = image_suffixes()
    paths = []
    for argument in arguments:
        if argument.is_dir():
            found, skipped = [], 0
            for path in sorted(argument.rglob("*")):
                reason = _not_an_image(path, suffixes)
                if reason is None:
                    found.append(path)
                elif reason:
                    skipped += 1
                    log.debug(f"{path}: skipped ({reason})")
            if skipped:
                log.info(
                    f"{argument}: {len(found)} image files; skipped {skipped} other "
                    f"entr{'y' if skipped == 1 else 'ies'} (-v names them)"
                )
            if not found:
                raise FileNotFoundError(f"{argument}: a folder with no image files")
            paths += found
        elif argument.is_file():
            paths.append(argument)
        elif argument.is_symlink():
            raise FileNotFoundError(f"{argument}: a broken link (its target does not exist)")
        else:
            raise FileNotFoundError(f"{argument}: no such image file or folder")
    return paths


def _not_an_image(path: Path, suffixes: frozenset[str]) -> str | None:
    """Why a folder entry is not taken as an image ('' for a folder: not counted), or None."""
    if path.is_dir():
        return ""
    if path.is_symlink() and not path.exists():
        return "a broken link"
    if not path.is_file():
        return "not a regular file"
    if path.suffix.lower() not in suffixes:
        return f"{path.suffix or 'no suffix'}: not an image format PIL decodes"
    return None


def classifier_settings(parser: argparse.ArgumentParser) -> None:
    """The crops (:class:`wca.crops.CropSpec`, the paper's defaults) and the run options of
    the commands that classify a few images (classify, explain)."""
    from wca.crops import CropSpec
    from wca.options import RunOptions

    add_settings(parser, CropSpec)
    budget_settings(parser)
    names = ("device", "precision", "batch_size", "max_image_pixels", "progress")
    add_settings(parser, RunOptions, names=names)


def budget_settings(parser: argparse.ArgumentParser) -> None:
    """The crop budget (:class:`wca.budget.BudgetSpec`; default: the fixed N) of the commands
    that classify (classify, explain, serve)."""
    from wca.budget import BudgetSpec

    add_settings(parser, BudgetSpec)


def classifier_budget(args: argparse.Namespace):
    """The budget of the budget flags given, checked before any work."""
    from wca.budget import BudgetSpec

    return BudgetSpec(**given(args, BudgetSpec))


def classifier_crops(args: argparse.Namespace):
    """The crops of the crop flags given (classify, explain), checked before any work."""
    from wca.crops import CropSpec

    return CropSpec(**given(args, CropSpec))


def required_model(args: argparse.Namespace) -> str:
    """``--model``, which classify and explain need (checked before any import of a model)."""
    if not args.model:
        raise UsageError("no model: pass --model SPEC, e.g. ViT-B-32/openai or demo")
    return model_spec(args)


def build_classifier(args: argparse.Namespace, classnames: list[str], crops, **options: Any):
    """The WCA classifier of ``--model`` and ``--descriptions`` with ``crops`` (classify,
    explain); ``options`` go to :class:`wca.WCAClassifier` as well."""
    from wca.classifier import WCAClassifier

    encoder = load_encoder(args, required_model(args))
    limit = run_options(args, names=("max_image_pixels",)).max_image_pixels
    return WCAClassifier(
        encoder,
        classnames,
        args.descriptions,
        crops=crops,
        max_image_pixels=limit,
        budget=classifier_budget(args),
        **options,
    )
