"""`wca explain`: figures, numbers and one HTML page saying why WCA chose each image's class."""

from __future__ import annotations

import argparse
from pathlib import Path

from wca.cli import UsageError
from wca.cli.classifier_options import (
    build_classifier,
    class_options,
    classifier_crop_options,
    classifier_crops,
    image_paths,
    read_classes,
    required_model,
)
from wca.cli.options import describe, model_help, model_options

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
            "weights lie), NAME.json (the numbers) and one index.html with all of them.",
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
    parser.add_argument("--label", metavar="NAME", help="the true class of the images")
    parser.add_argument(
        "--top-k", type=int, default=3, help="classes listed with their evidence (3)"
    )
    parser.add_argument(
        "--out", type=Path, default=Path(DEFAULT_OUT), help=f"output folder ({DEFAULT_OUT})"
    )
    classifier_crop_options(parser)
    model_options(parser, with_workers=False, model_help=model_help() + "; required")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    classnames = read_classes(args)
    if args.top_k < 1:
        raise UsageError(f"--top-k must be >= 1, got {args.top_k}")
    if args.label is not None and args.label not in classnames:
        raise UsageError(f"--label {args.label!r} is not one of the {len(classnames)} classes")
    required_model(args)
    images = image_paths(args.images)
    crops = classifier_crops(args)
    classifier = build_classifier(args, classnames, crops)
    from wca.explain import write_explanations  # matplotlib: once the arguments are checked

    written = write_explanations(classifier, images, args.out, args.label, args.top_k)
    print(f"wrote {len(written)} files to {args.out}; open {written[-1]}")
    return 0
