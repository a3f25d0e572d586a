"""Option groups and steps that several commands share: data, model, crops, settings, texts."""

from __future__ import annotations

import argparse
import logging
import os
import textwrap
import warnings
from pathlib import Path
from typing import Any

from wca.cli import StepFailed, UsageError

log = logging.getLogger("wca")
IMAGENET_FAMILY = ("imagenet", "imagenetv2", "imagenet-sketch", "imagenet-r", "imagenet-a")


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def default_cache_dir() -> Path:
    """``$WCA_CACHE_DIR/features``, else ``$XDG_CACHE_HOME/wca/features`` (``~/.cache``)."""
    if os.environ.get("WCA_CACHE_DIR"):
        return Path(os.environ["WCA_CACHE_DIR"]) / "features"
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "wca" / "features"


def describe(paragraph: str, examples: str) -> str:
    """A sub-command description: the paragraph wrapped for the terminal, examples verbatim."""
    return textwrap.fill(paragraph, 78) + "\n\nexamples:\n  " + examples


def data_options(parser: argparse.ArgumentParser, many: bool = False) -> None:
    """``many``: ``--dataset`` may be repeated (a sweep), giving a list."""
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
        type=Path,
        metavar="DIR",
        help="where the dataset is, as downloaded (or data_path in --config)",
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

    from wca.crops import MAX_PIXELS_ENV

    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
    limit = getattr(args, "max_image_pixels", None)
    if limit is None:
        return
    if limit < 0:
        raise UsageError(f"--max-image-pixels must be >= 0 (0: no limit), got {limit}")
    os.environ[MAX_PIXELS_ENV] = str(limit)


def model_options(
    parser: argparse.ArgumentParser, with_workers: bool = True, many: bool = False
) -> None:
    """``many``: ``--model`` may be repeated (a sweep), giving a list."""
    group = parser.add_argument_group("model and speed")
    group.add_argument(
        "--model",
        metavar="SPEC",
        action="append" if many else "store",
        help=("repeatable; " if many else "")
        + "open_clip:ViT-B-32/openai, open_clip:hf-hub:org/name, "
        "open_clip:ARCH@/path.pt, hf:openai/clip-vit-base-patch32, hf:/dir "
        "(eval default: the OpenAI weights of model_size in --config)",
    )
    group.add_argument("--device", default="auto", help="auto (cuda, mps, cpu), cpu, cuda:0")
    group.add_argument(
        "--precision",
        default="fp32",
        choices=("fp32", "fp16", "bf16"),
        help="model precision (fp16 on GPUs only; default fp32)",
    )
    group.add_argument(
        "--batch-size",
        type=int,
        help="views per encoder forward pass (default 256; no effect on results)",
    )
    if with_workers:
        group.add_argument(
            "--num-workers",
            type=int,
            default=0,
            help="loader processes decoding images and making crops (default 0:"
            " one background thread)",
        )
        group.add_argument(
            "--shard-size", type=int, default=1000, help="images per cache shard (default 1000)"
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
        "without near-duplicates (IoU filter); grid: a multi-scale grid; rrc: "
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


def resolve(args: argparse.Namespace, protocol_flags: bool):
    from wca.config import resolve_config

    apply_image_limit(args)

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
        "model": args.model,
        "data_path": None if args.data_root is None else str(args.data_root),
    }
    settings = list(args.set)
    if protocol_flags:
        overrides.update(
            n_run=args.n_run, patch_n=args.patch_n, protocol=args.protocol, methods=args.methods
        )
        for flag in ("image_scale", "text_scale"):
            overrides[f"methods.wca.{flag}"] = getattr(args, flag)
    config = resolve_config(args.dataset, args.config, overrides, settings)
    if not config.dataset:
        raise UsageError("no dataset: pass --dataset NAME (or dataset: in --config)")
    if not config.data_path:
        raise UsageError("no data root: pass --data-root DIR (or data_path: in --config)")
    for note in config.notes:
        log.info(note)
    return config


def model_temperature(method: str, encoder) -> dict[str, float]:
    """``logit_scale``: the encoder's own, for the heads that take one (zero, mta, awt)."""
    from wca.methods.registry import options_model

    takes = "logit_scale" in options_model(method).model_fields
    return {"logit_scale": float(encoder.logit_scale)} if takes else {}


def build_heads(config, sources, encoder, allow_duplicates: bool) -> dict[str, Any]:
    """The heads of the enabled methods; a default method whose texts the task lacks (no
    clip-e.json, no word list) is skipped with one line, a method asked for by name fails."""
    from wca.methods import build_head
    from wca.methods.registry import MissingTextSource

    heads = {}
    for method in config.enabled_methods():
        options = {**model_temperature(method.name, encoder), **method.options}
        try:
            heads[method.name] = build_head(
                method.name,
                encoder.encode_texts,
                sources,
                allow_duplicates=allow_duplicates,
                **options,
            )
        except MissingTextSource as error:
            if config.named(method.name):
                raise
            log.info(f"skipped {method.name}: {error}")
    if not heads:
        raise UsageError("no method can run on these texts (see the lines above)")
    return heads


def load_dataset(config, args: argparse.Namespace):
    from wca.datasets import load_dataset

    return load_dataset(
        config.dataset, config.data_path, config.split, descriptions_dir=args.descriptions_dir
    )


def text_sources(dataset, args: argparse.Namespace):
    """The texts of every method and where they came from.

    ``--descriptions FOLDER`` replaces the dataset's folder of the descriptions directory;
    ``--descriptions FILE`` replaces only its sentences (cupl, wca). Class names come from the
    folder when it has its own lists, else from the dataset; ImageNet and its variants use
    ImageNet's lists (CuPL names; OpenAI names for clip-d and waffle), as the authors do.
    """
    from wca.datasets import resolve_descriptions_dir
    from wca.descriptions import load_descriptions
    from wca.methods import TextSources, load_text_sources

    folder = None
    if args.descriptions is not None and args.descriptions.is_dir():
        folder = args.descriptions
    elif dataset.descriptions_name:
        directory, _ = resolve_descriptions_dir(args.descriptions_dir)
        folder = directory / dataset.descriptions_name
    if folder is None or (args.descriptions is not None and not folder.is_dir()):
        if args.descriptions is None:
            raise UsageError(
                f"{dataset.name}: no descriptions for these classes: pass --descriptions FOLDER "
                "or a {class: [sentence, ...]} JSON file"
            )
        sources = TextSources(list(dataset.classnames))
    else:
        own_names = any((folder / n).is_file() for n in ("classnames.json", "classnames-cupl.json"))
        sources = load_text_sources(folder, None if own_names else list(dataset.classnames))
        names = folder.parent / "imagenet"
        if dataset.name in IMAGENET_FAMILY and (names / "classnames-openai.json").is_file():
            # the authors score every ImageNet variant with ImageNet's name lists
            imagenet = load_text_sources(names)
            sources.classnames, sources.classnames_for = (
                imagenet.classnames,
                imagenet.classnames_for,
            )
    if len(sources.classnames) != len(dataset.classnames):
        raise ValueError(
            f"{folder}: {len(sources.classnames)} class names, the dataset has "
            f"{len(dataset.classnames)}"
        )
    if args.descriptions is not None and not args.descriptions.is_dir():
        sources.sentences = load_descriptions(args.descriptions)
        return sources, args.descriptions if folder is None else f"{folder} + {args.descriptions}"
    return sources, folder


def load_encoder(args: argparse.Namespace, spec: str, batch_size: int | None):
    from wca.encoders import load_encoder
    from wca.features.distributed import rank_device

    device = rank_device(args.device)  # under torchrun: cuda:LOCAL_RANK
    return load_encoder(spec, device=device, precision=args.precision, batch_size=batch_size)


def extract(config, args: argparse.Namespace, encoder, dataset):
    """The features of every image; under torchrun, on rank 0 only (the other ranks: None)."""
    from wca.features import extract_features
    from wca.features.distributed import RankError, join

    if args.num_workers < 0:
        raise UsageError(f"--num-workers must be >= 0, got {args.num_workers}")
    try:
        return extract_features(
            encoder,
            dataset,
            config.n_samples,
            config.crop_alpha,
            config.beta,
            config.seed,
            None if args.no_cache else (args.cache_dir or default_cache_dir()),
            batch_size=config.batch_size,
            num_workers=args.num_workers,
            shard_size=args.shard_size,
            fidelity=config.fidelity,
            half=config.half,
            strategy=config.crop_strategy,
            progress=not args.no_progress,
            on_bad_image=getattr(args, "on_bad_image", None),
            views_on_device=args.views_on_device,
            ranks=join(encoder.device, args.dist_timeout),
        )
    except RankError as error:  # another rank failed or never arrived
        raise StepFailed(str(error)) from error


def slug(text: str) -> str:
    keep = "".join(c if c.isalnum() or c in "-._" else "-" for c in text)
    return "-".join(part for part in keep.split("-") if part)[-80:]


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


def image_paths(arguments: list[Path]) -> list[Path]:
    """The image files named, a folder standing for every image file under it (sorted)."""
    paths = []
    for argument in arguments:
        if argument.is_dir():
            found = sorted(
                p for p in argument.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
            )
            if not found:
                raise FileNotFoundError(f"{argument}: a folder with no image files")
            paths += found
        elif argument.is_file():
            paths.append(argument)
        else:
            raise FileNotFoundError(f"{argument}: no such image file or folder")
    return paths


def build_classifier(args: argparse.Namespace, classnames: list[str], **options: Any):
    """The WCA classifier of ``--model``, ``--descriptions``, ``--n-crops``, ``--alpha`` and
    ``--seed`` (classify, explain); ``options`` go to :class:`wca.WCAClassifier` as well."""
    from wca.classifier import WCAClassifier

    if not args.model:
        raise UsageError("no model: pass --model SPEC, e.g. open_clip:ViT-B-32/openai")
    encoder = load_encoder(args, args.model, args.batch_size)
    return WCAClassifier(
        encoder,
        classnames,
        args.descriptions,
        n_crops=args.n_crops,
        alpha=args.alpha,
        seed=args.seed,
        **options,
    )
