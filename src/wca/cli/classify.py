"""`wca classify`: WCA on your own images and classes."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from wca.cli import UsageError
from wca.cli.options import describe, load_encoder, model_options


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "classify",
        help="classify your own images among your own classes with WCA",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=describe(
            "Score each image's crops against descriptions of each class (JSON "
            "{class: [sentence, ...]}, e.g. from `wca describe`) and print the top classes.",
            "wca classify bird.jpg --classes 'blue jay,cardinal' --descriptions birds.json \\\n"
            "      --model open_clip:ViT-B-32/openai",
        ),
    )
    parser.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="image files")
    names = parser.add_mutually_exclusive_group(required=True)
    names.add_argument("--classes", help="comma-separated class names")
    names.add_argument(
        "--classes-file",
        type=Path,
        metavar="FILE",
        help="class names: JSON list or one name per line",
    )
    parser.add_argument(
        "--descriptions",
        type=Path,
        required=True,
        metavar="FILE",
        help="JSON {class: [sentence, ...]} with every class",
    )
    parser.add_argument("--top-k", type=int, default=5, help="classes shown per image (5)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.add_argument(
        "--n-crops", "--n-samples", dest="n_crops", type=int, default=60,
        help="crops per image (60)",
    )
    parser.add_argument(
        "--alpha",
        type=float,
        default=0.5,
        help="smallest crop side, as a fraction of the short side (0.5)",
    )
    parser.add_argument("--seed", type=int, default=0, help="crop sampler seed (0)")
    parser.add_argument(
        "--fidelity",
        action="store_true",
        help="preprocess every crop with the model's own transform",
    )
    model_options(parser, with_workers=False)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from wca.classifier import WCAClassifier
    from wca.descriptions import load_classnames

    if args.classes is not None:
        classnames = [name.strip() for name in args.classes.split(",") if name.strip()]
    else:
        classnames = load_classnames(args.classes_file)
    if len(classnames) < 2:
        raise UsageError("give at least two classes (--classes a,b or --classes-file FILE)")
    if args.top_k < 1:
        raise UsageError(f"--top-k must be >= 1, got {args.top_k}")
    missing = [str(path) for path in args.images if not path.is_file()]
    if missing:
        raise FileNotFoundError(f"{', '.join(missing)}: no such image file")
    if not args.model:
        raise UsageError("no model: pass --model SPEC, e.g. open_clip:ViT-B-32/openai")
    encoder = load_encoder(args, args.model, args.batch_size)
    classifier = WCAClassifier(
        encoder,
        classnames,
        args.descriptions,
        n_crops=args.n_crops,
        alpha=args.alpha,
        seed=args.seed,
        fidelity=args.fidelity,
    )
    predictions = classifier.predict(args.images, top_k=args.top_k)
    if args.json:
        document = [
            {"image": str(path), "predictions": prediction.as_pipeline()}
            for path, prediction in zip(args.images, predictions, strict=True)
        ]
        print(json.dumps(document, indent=1))
        return 0
    for path, prediction in zip(args.images, predictions, strict=True):
        print(path)
        for rank, (label, score) in enumerate(
            zip(prediction.labels, prediction.scores, strict=True), 1
        ):
            print(f"  {rank}. {label}  {score:.3f}")
    return 0
