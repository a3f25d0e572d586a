"""`wca explain`: figures, numbers and one HTML page saying why WCA chose each image's class."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from wca.cli import UsageError
from wca.cli.classifier_options import (
    build_classifier,
    class_options,
    classifier_crops,
    classifier_settings,
    image_paths,
    read_classes,
    required_model,
)
from wca.cli.options import describe, model_help, model_option

DEFAULT_OUT = "wca-explain"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "explain",
        help="show why WCA chose a class: description figures, where-maps, JSON, one HTML page",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=describe(
            "For each image write NAME-descriptions.png (every description of the prediction, "
            "the runner-up and the true class: WCA's local match beside CLIP-D's whole-image "
            "similarity), NAME-where.png (where the top descriptions match, where the crop "
            "weights lie), NAME.json (the numbers) and one index.html with all of them. An "
            "unreadable image is named, skipped, and makes the exit status 1.",
            "wca explain bird.jpg --classes-file classes.txt --descriptions cupl.json \\\n"
            "      --model open_clip:ViT-B-32/openai --label 'blue jay' --out why",
        ),
    )
    parser.add_argument(
        "images", nargs="+", type=Path, metavar="IMAGE", help="image files, or folders of them"
    )
    class_options(parser)
    parser.add_argument(
        "--descriptions",
        type=Path,
        required=True,
        metavar="FILE",
        help="JSON {class: [sentence, ...]} with every class",
    )
    parser.add_argument(
        "--label",
        metavar="NAME",
        help="the true class of the images (default: an image's folder, when it is named after "
        "a class, as in an image folder of class sub-folders)",
    )
    parser.add_argument(
        "--top-k", type=int, default=3, help="classes listed with their evidence (3)"
    )
    parser.add_argument(
        "--output", type=Path, default=Path(DEFAULT_OUT), help=f"output folder ({DEFAULT_OUT})"
    )
    model_option(parser, model_help() + "; required")
    classifier_settings(parser)
    parser.add_argument(
        "--explain-crops",
        default="0.1,0.2",
        metavar="SIDES",
        help="the where-maps' explanation crops: sliding windows of these sides (fractions of "
        "the short side, 3 over each pixel), encoded for the maps only and cached; 'none' "
        "draws the maps from WCA's own crops (0.1,0.2)",
    )
    parser.set_defaults(handler=run)


def explanation_crops(text: str):
    """``--explain-crops``: the windows of the sides listed, or None for ``none``."""
    from wca.explain.windows import Windows

    if text.strip().lower() == "none":
        return None
    try:
        return Windows(tuple(float(side) for side in text.split(",")))
    except ValueError as error:
        raise UsageError(
            f"--explain-crops {text!r}: give fractions of the short side in (0, 1], e.g. "
            f"0.1,0.2, or none ({error})"
        ) from None


def folder_labels(images: list[Path], classnames: list[str]) -> list[str | None]:
    """Each image's true class from its folder, where the folder is named after a class (case,
    ``_`` and spaces aside, as an image folder names its classes); None elsewhere."""
    from wca.descriptions.io import class_key

    by_key = {class_key(name): name for name in classnames}
    return [by_key.get(class_key(path.parent.name)) for path in images]


def run(args: argparse.Namespace) -> int:
    classnames = read_classes(args)
    if args.top_k < 1:
        raise UsageError(f"--top-k must be >= 1, got {args.top_k}")
    if args.label is not None and args.label not in classnames:
        raise UsageError(f"--label {args.label!r} is not one of the {len(classnames)} classes")
    required_model(args)
    windows = explanation_crops(args.explain_crops)
    images = image_paths(args.images)
    crops = classifier_crops(args)
    classifier = build_classifier(args, classnames, crops)
    from wca.explain import write_explanations  # matplotlib: once the arguments are checked

    failed = []

    def skip(position: int, error: ValueError) -> None:
        print(f"wca: error: {error}", file=sys.stderr)
        failed.append(images[position])

    label = args.label if args.label is not None else folder_labels(images, classnames)
    written = write_explanations(
        classifier, images, args.output, label, args.top_k, windows=windows, on_error=skip
    )
    print(f"wrote {len(written)} files to {args.output}; open {written[-1]}")
    if failed:
        print(f"wca: {len(failed)} of {len(images)} images could not be read", file=sys.stderr)
        return 1
    return 0
