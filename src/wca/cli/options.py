"""Option groups that several commands share, and the mapping from flags to the library's
settings (:class:`wca.config.EvalConfig`, :class:`wca.options.RunOptions`, ``CropSpec``) and
back (:func:`flag_name`, for errors that name a setting)."""

from __future__ import annotations

import argparse
import logging
import os
import textwrap
import warnings
from pathlib import Path
from typing import Any

from wca import defaults
from wca.cli import UsageError

log = logging.getLogger("wca")

# The --model spec forms, written out here so that --help imports no model library; a test
# checks them against wca.encoders.registry (SPEC_FORMS, CHECKPOINT_SUFFIXES, NAMED_MODELS).
MODEL_FORMS = (
    "open_clip:ARCH/TAG",
    "open_clip:hf-hub:ORG/NAME",
    "open_clip:ARCH@/path/weights.pt",
    "open_clip:/path/file.pt",
    "open_clip:local-dir:/path/folder",
    "hf:ORG/NAME",
    "hf:/path/folder",
)
CHECKPOINT_FILES = ".pt/.pth/.bin/.ckpt/.safetensors"
NAMED_MODELS = {"demo": "the shipped demo model"}


def model_help(default: str | None = None) -> str:
    """The help of one command's ``--model``: every spec form, and its own ``default``."""
    named = ", ".join(f"{name} ({what})" for name, what in NAMED_MODELS.items())
    text = (
        f"the model: {', '.join(MODEL_FORMS)}, a bare path to a {CHECKPOINT_FILES} file or "
        f"a model folder (backend inferred), or {named}; `wca models` lists them"
    )
    return f"{text} (default: {default})" if default else text


# settings whose flag is not --<setting with dashes>
FLAGS = {
    "n": "--n-crops",
    "n_samples": "--n-crops",
    "n_crops": "--n-crops",
    "strategy": "--crop-strategy",
    "data_path": "--data-root",
    "half": "--fp16-cache",
    "bad_images": "--skip-bad-images",
    "allow_duplicates": "--allow-duplicate-classes",
}


def flag_name(setting: str) -> str:
    """The flag that sets ``setting`` (``methods.wca.image_scale``: ``--image-scale``)."""
    key = setting.rsplit(".", 1)[-1]
    return FLAGS.get(key, "--" + key.replace("_", "-"))


def describe(paragraph: str, examples: str) -> str:
    """A sub-command description: the paragraph wrapped for the terminal, examples verbatim."""
    return textwrap.fill(paragraph, 78) + "\n\nexamples:\n  " + examples


def data_options(parser: argparse.ArgumentParser, many: bool = False) -> None:
    """``many``: ``--dataset`` and ``--data-root`` may be repeated (a sweep), giving lists."""
    group = parser.add_argument_group("data")
    group.add_argument(
        "--dataset",
        action="append" if many else "store",
        help=("repeatable; " if many else "") + "dataset name: imagefolder, imagenet, imagenetv2, "
        "imagenet-sketch, imagenet-r, imagenet-a, cub, dtd, food101, "
        "oxford_pets, places365, eurosat",
    )
    group.add_argument(
        "--data-root",
        action="append" if many else "store",
        metavar="DIR",
        help=("repeatable; " if many else "")
        + "where the dataset is, as downloaded (or data_path in --config)",
    )
    group.add_argument(
        "--dataset-name",
        metavar="NAME",
        help="the dataset's name in results (default: an image folder's own folder name)",
    )
    group.add_argument("--split", help="split to read (default: the paper's test split)")
    group.add_argument(
        "--descriptions-dir",
        type=Path,
        metavar="DIR",
        help="description sets laid out <dataset>/cupl.json, clip-d.json, "
        "clip-e.json, classnames.json (default: $WCA_DESCRIPTIONS_DIR, else "
        "~/.cache/wca/descriptions; `wca descriptions fetch` fills it)",
    )
    group.add_argument(
        "--descriptions",
        type=Path,
        metavar="PATH",
        help="texts for this run: a folder laid out like one dataset of "
        "--descriptions-dir (replaces it), or a {class: [sentence, ...]} JSON (replaces its "
        "sentences, used by cupl and wca); needed for imagefolder",
    )
    group.add_argument(
        "--cache-dir",
        type=Path,
        metavar="DIR",
        help="feature cache (default: $WCA_CACHE_DIR/features, else ~/.cache/wca/features)",
    )
    group.add_argument("--no-cache", action="store_true", help="keep features in memory only")
    image_limit_option(group)


def image_limit_option(parser) -> None:
    """``--max-image-pixels N``: the decompression-bomb guard of image decoding."""
    parser.add_argument(
        "--max-image-pixels",
        type=int,
        metavar="N",
        help="refuse images larger than N pixels (width x height), a guard against "
        "decompression bombs (default: $WCA_MAX_IMAGE_PIXELS, else PIL's 89478485; 0: no limit)",
    )


def apply_image_limit(args: argparse.Namespace) -> None:
    """Pass ``--max-image-pixels`` on to the image decoder (and loader workers) by its
    environment variable. PIL's own warning is silenced: the decoder raises a clear error."""
    from PIL import Image

    from wca.images import MAX_PIXELS_ENV

    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
    limit = getattr(args, "max_image_pixels", None)
    if limit is None:
        return
    if limit < 0:
        raise UsageError(f"--max-image-pixels must be >= 0 (0: no limit), got {limit}")
    os.environ[MAX_PIXELS_ENV] = str(limit)


def model_options(
    parser: argparse.ArgumentParser,
    with_workers: bool = True,
    many: bool = False,
    model_help: str = model_help(),
) -> None:
    """``many``: ``--model`` may be repeated (a sweep), giving a list; ``model_help``: the
    command's own help of ``--model`` (:func:`model_help` with its default)."""
    group = parser.add_argument_group("model and speed")
    group.add_argument(
        "--model",
        metavar="SPEC",
        action="append" if many else "store",
        help=("repeatable; " if many else "") + model_help,
    )
    group.add_argument(
        "--device",
        default=defaults.DEVICE,
        help=f"auto (cuda, mps, cpu), cpu, cuda:0 (default {defaults.DEVICE})",
    )
    group.add_argument(
        "--precision",
        default=defaults.PRECISION,
        choices=("fp32", "fp16", "bf16"),
        help=f"model precision (fp16 on GPUs only; default {defaults.PRECISION})",
    )
    group.add_argument(
        "--batch-size",
        type=int,
        help=f"views per encoder pass (default {defaults.BATCH_SIZE}; no effect on results)",
    )
    if with_workers:
        group.add_argument(
            "--num-workers",
            type=int,
            default=defaults.NUM_WORKERS,
            help="loader processes decoding images and making crops (default "
            f"{defaults.NUM_WORKERS}; 0: one background thread)",
        )
        group.add_argument(
            "--shard-size",
            type=int,
            default=defaults.SHARD_SIZE,
            help=f"images per cache shard (default {defaults.SHARD_SIZE})",
        )
        group.add_argument(
            "--views-on-device",
            action=argparse.BooleanOptionalAction,
            help="decode on the CPU, cut and resize the views on the model's device "
            "(default: on for CUDA)",
        )
        group.add_argument(
            "--dist-timeout",
            type=float,
            metavar="SECONDS",
            help="under torchrun: how long a rank waits for the others before failing, naming "
            "them (default: $WCA_DIST_TIMEOUT, else 1800)",
        )


def crop_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("crops")
    group.add_argument(
        "--alpha",
        type=float,
        help="smallest crop side as a fraction of the short side (0.5; places365 0.7)",
    )
    group.add_argument("--beta", type=float, help="largest crop side fraction (0.9)")
    group.add_argument(
        "--n-crops",
        "--n-samples",
        dest="n_samples",
        type=int,
        help="crop pool per image, config key n_samples (100; 60 for ImageNet and -R/-A/-Sketch)",
    )
    group.add_argument("--seed", type=int, help="seed of crops and run draws (0)")
    group.add_argument(
        "--crop-strategy",
        metavar="NAME",
        help="random: the paper's uniform crops (default); diverse: random "
        "without near-duplicates (IoU filter); bifta: BiFTA's IoU-filtered crops "
        "(pool = their n_samples candidates); grid: a multi-scale grid; rrc: "
        "RandomResizedCrop boxes with random flips, as ZERO, MTA and AWT augment",
    )
    group.add_argument(
        "--fidelity",
        action="store_true",
        default=None,
        help="make crops with the model's own PIL preprocessing per crop (the "
        "authors' way, slower) instead of the fast tensor path",
    )
    group.add_argument(
        "--fp16-cache",
        dest="half",
        action="store_true",
        default=None,
        help="store features in fp16 (half the disk)",
    )


def config_overrides(args: argparse.Namespace, protocol_flags: bool) -> dict[str, Any]:
    """The config keys the flags set (None: not given)."""
    overrides: dict[str, Any] = {
        "alpha": args.alpha,
        "beta": args.beta,
        "n_samples": args.n_samples,
        "seed": args.seed,
        "batch_size": args.batch_size,
        "split": args.split,
        "crop_strategy": args.crop_strategy,
        "fidelity": args.fidelity,
        "half": args.half,
        "dataset_name": args.dataset_name,
    }
    if protocol_flags:
        overrides.update(
            n_run=args.n_run, patch_n=args.patch_n, protocol=args.protocol, methods=args.methods
        )
        for flag in ("image_scale", "text_scale"):
            overrides[f"methods.wca.{flag}"] = getattr(args, flag)
    return overrides


def run_options(args: argparse.Namespace) -> Any:
    """The :class:`wca.options.RunOptions` of the flags (paths made absolute)."""
    from wca.options import RunOptions

    apply_image_limit(args)
    absolute = lambda path: None if path is None else path.expanduser().resolve()  # noqa: E731
    cache = None if args.no_cache else (absolute(args.cache_dir) or defaults.cache_dir("features"))
    return RunOptions(
        device=args.device,
        precision=args.precision,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        shard_size=args.shard_size,
        views_on_device=args.views_on_device,
        cache_dir=cache,
        dist_timeout=args.dist_timeout,
        descriptions_dir=absolute(args.descriptions_dir),
        descriptions=absolute(args.descriptions),
        bad_images="skip" if getattr(args, "skip_bad_images", False) else "stop",
        allow_duplicate_classes=getattr(args, "allow_duplicate_classes", False),
        progress=not args.no_progress,
    )


def setting_label(text: str) -> str:
    return f"--set {text}"


def load_encoder(args: argparse.Namespace, spec: str):
    """The encoder of ``spec`` with ``--device`` (this rank's under torchrun), ``--precision``
    and ``--batch-size``."""
    from wca.encoders import load_encoder
    from wca.features.distributed import rank_device

    device = rank_device(args.device)
    encoder = load_encoder(
        spec, device=device, precision=args.precision, batch_size=args.batch_size
    )
    encoder.progress = not getattr(args, "no_progress", False)
    return encoder
