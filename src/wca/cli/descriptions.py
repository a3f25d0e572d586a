"""`wca descriptions fetch|check|clean`: published description sets and their upkeep."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from wca.cli.describe import near_duplicate_filter, near_duplicate_options
from wca.descriptions.io import load_classnames, load_descriptions


def register(subparsers: argparse._SubParsersAction) -> None:
    descriptions = subparsers.add_parser(
        "descriptions", help="fetch, check or clean description sets",
        description="Published description sets: download and verify, check against a class "
        "list, clean.",
    )
    actions = descriptions.add_subparsers(title="actions", metavar="ACTION")

    fetch = actions.add_parser(
        "fetch", help="download a published set into the cache and verify it",
        description="Download a published description set (WCA authors' or CuPL authors' "
        "release), verify its size and SHA-256, and print its local path.",
    )
    fetch.add_argument("--dataset", help="e.g. cub, imagenet, cupl-original")
    fetch.add_argument("--set", dest="set_name",
                       help="cupl, clip-d, clip-e (base, full for some; file stem for "
                       "cupl-original)")
    fetch.add_argument("--dir", type=Path,
                       help="cache folder (default: $WCA_CACHE_DIR/descriptions or "
                       "~/.cache/wca/descriptions)")
    fetch.add_argument("--base-url", help="mirror laid out like <dataset>/<set>.json "
                       "(default: $WCA_DESCRIPTIONS_URL, else the authors' repositories)")
    fetch.add_argument("--timeout", type=float, default=5.0,
                       help="seconds to wait for a connection (5)")
    fetch.add_argument("--list", action="store_true", help="list the published sets")
    fetch.set_defaults(handler=run_fetch)

    check = actions.add_parser(
        "check", help="report missing, extra, duplicate and empty classes",
        description="Compare a {class: [text, ...]} file with a class list; exit 1 if there "
        "are missing, extra or duplicate classes, classes with no usable description, or "
        "descriptions longer than the model's text context (cut when encoded).",
    )
    check.add_argument("file", type=Path, help="description JSON file")
    check.add_argument("--classes-file", required=True, type=Path, help="class names")
    check.add_argument("--model", metavar="SPEC",
                       help="count tokens with this model's tokenizer (a spec as in `wca "
                       "models`, a checkpoint path or demo; default: CLIP's BPE, 77 tokens)")
    check.set_defaults(handler=run_check)

    clean = actions.add_parser(
        "clean", help="drop empty, repeated and near-duplicate descriptions",
        description="Normalise spacing, drop empty and repeated descriptions and, with an "
        "encoder, near-duplicates by text-embedding similarity.",
    )
    clean.add_argument("file", type=Path, help="description JSON file")
    clean.add_argument("--output", required=True, type=Path, help="cleaned JSON file")
    near_duplicate_options(clean)
    clean.set_defaults(handler=run_clean)


def run_fetch(args: argparse.Namespace) -> int:
    from wca.descriptions.fetch import FetchError, fetch, published_sets

    if args.list:
        for dataset, sets in sorted(published_sets().items()):
            print(f"{dataset}: {', '.join(sets)}")
        return 0
    if not args.dataset or not args.set_name:
        raise ValueError("fetch needs --dataset and --set (or --list)")
    try:
        path = fetch(
            args.dataset, args.set_name, args.dir, base_url=args.base_url,
            connect_timeout=args.timeout,
        )
    except FetchError as error:
        print(f"wca: error: {error}", file=sys.stderr)
        return 1
    print(path)
    return 0


def run_check(args: argparse.Namespace) -> int:
    from wca.descriptions.check import check_descriptions

    tokens = None
    if args.model:
        from wca.encoders import load_encoder
        from wca.encoders.tokens import encoder_limit

        encoder = load_encoder(args.model, device="cpu")
        tokens = encoder_limit(encoder)
        if tokens is None:
            raise ValueError(f"--model {args.model}: its text context is unknown")
    report = check_descriptions(args.file, load_classnames(args.classes_file), tokens)
    print("\n".join(report.lines()))
    return 0 if report.ok else 1


def run_clean(args: argparse.Namespace) -> int:
    from wca.descriptions.clean import clean_descriptions
    from wca.descriptions.progress import write_json_atomic

    descriptions = load_descriptions(args.file)
    cleaner = near_duplicate_filter(args)
    cleaned = cleaner(descriptions) if cleaner else clean_descriptions(descriptions)
    before = sum(len(t) for t in descriptions.values())
    after = sum(len(t) for t in cleaned.values())
    write_json_atomic(args.output, cleaned)
    print(f"{args.output}: kept {after} of {before} descriptions", file=sys.stderr)
    return 0
