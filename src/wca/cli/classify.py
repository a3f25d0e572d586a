"""`wca classify`: WCA on your own images and classes."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from wca.cli import UsageError, flag_hint
from wca.cli.classifier_options import (
    build_classifier,
    class_options,
    classifier_crops,
    classifier_settings,
    image_paths,
    read_classes,
    required_model,
)
from wca.cli.options import describe, log, model_help, model_option
from wca.cli.settings import add_settings
from wca.options import RunOptions


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "classify",
        help="classify your own images among your own classes with WCA",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=describe(
            "Score each image's crops against descriptions of each class (JSON "
            "{class: [sentence, ...]}, e.g. from `wca describe`) and print the top classes "
            "of each image as soon as it is done. Without --descriptions every class is "
            "described by the CLIP prompt 'a photo of a {class}.'. An unreadable image is "
            "reported and skipped; the exit status is then 1.",
            "wca classify bird.jpg --classes 'blue jay,cardinal' --descriptions birds.json \\\n"
            "      --model open_clip:ViT-B-32/openai\n"
            "  wca classify photos/ --classes-file classes.txt --json --model hf:/models/clip",
        ),
    )
    parser.add_argument(
        "images",
        nargs="+",
        type=Path,
        metavar="IMAGE",
        help="image files, or folders (every image in them, recursively, sorted)",
    )
    class_options(parser)
    parser.add_argument(
        "--descriptions",
        type=Path,
        metavar="FILE",
        help="JSON {class: [sentence, ...]} with every class (default: the CLIP prompt "
        "'a photo of a {class}.' per class)",
    )
    parser.add_argument("--top-k", type=int, default=5, help="classes shown per image (5)")
    parser.add_argument(
        "--json",
        action="store_true",
        help="print JSON with the evidence: crop boxes and weights, description scores",
    )
    model_option(parser, model_help() + "; required")
    classifier_settings(parser)
    parser.add_argument(
        "--fidelity",
        action="store_true",
        help="preprocess every crop with the model's own transform",
    )
    parser.add_argument(
        "--explain",
        type=Path,
        metavar="DIR",
        help="also write explanations (figures, JSON, index.html) to DIR, as `wca explain`",
    )
    add_settings(parser, RunOptions, names=("allow_duplicate_classes",))
    parser.set_defaults(handler=run)


def evidence(prediction) -> dict:
    """A prediction as JSON: the top classes, every crop's box and weight, and per top class
    its descriptions with their weights and crop-weighted similarities."""
    return {
        "predictions": prediction.as_pipeline(),
        "image_size": list(prediction.image_size),
        "crops": [
            {"box": box, "weight": weight}
            for box, weight in zip(
                prediction.boxes.tolist(), prediction.crop_weights.tolist(), strict=True
            )
        ],
        "descriptions": {
            label: [vars(row) for row in rows] for label, rows in prediction.descriptions.items()
        },
    }


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from wca.defaults import LABEL_TEMPLATE

    classnames = read_classes(args)
    if args.top_k < 1:
        raise UsageError(f"--top-k must be >= 1, got {args.top_k}")
    required_model(args)
    images = image_paths(args.images)
    crops = classifier_crops(args)
    if args.model and args.descriptions is None:
        log.info(
            f"no --descriptions: each class is described by the CLIP prompt "
            f"{LABEL_TEMPLATE.format('{class}')!r} alone (`wca describe` writes richer ones)"
        )
    duplicates = bool(args.allow_duplicate_classes)
    classifier = build_classifier(
        args, classnames, crops, fidelity=args.fidelity, allow_duplicate_classes=duplicates
    )
    document, failed, explained = [], 0, []
    results = classifier.predict_each(images, top_k=args.top_k, progress=args.progress)
    for position, prediction in results:
        path = images[position]
        if isinstance(prediction, Exception):
            failed += 1
            hint = flag_hint(prediction, args)
            tqdm.write(f"wca: error: {prediction}{hint}", file=sys.stderr)  # above a live bar
            document.append({"image": str(path), "error": str(prediction)})
            continue
        explained.append((path, prediction))
        if args.json:
            document.append({"image": str(path), **evidence(prediction)})
        else:
            print(path)
            for rank, (label, score) in enumerate(
                zip(prediction.labels, prediction.scores, strict=True), 1
            ):
                print(f"  {rank}. {label}  {score:.3f}", flush=rank == len(prediction.labels))
    if args.explain is not None and explained:
        from wca.explain import write_explanations

        paths, predictions = zip(*explained, strict=True)
        write_explanations(
            classifier, paths, args.explain, top_k=args.top_k, predictions=predictions
        )
    if args.json:
        print(json.dumps(document, indent=1))
    if failed:
        print(f"wca: {failed} of {len(images)} images could not be classified", file=sys.stderr)
        return 1
    return 0
