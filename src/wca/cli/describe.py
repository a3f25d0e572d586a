"""`wca describe` (LLM-written class descriptions) and `wca descriptions fetch|check|clean`."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

from wca.descriptions.io import load_classnames, load_descriptions


def register(subparsers: argparse._SubParsersAction) -> None:
    describe = subparsers.add_parser(
        "describe",
        help="write class descriptions with an LLM (CuPL or CLIP-D style)",
        description="Ask an OpenAI-compatible chat endpoint (OpenAI, vLLM, llama.cpp, Ollama, "
        "LM Studio) for descriptions of every class and write {class: [text, ...]} JSON. "
        "Interrupted runs resume: classes already in --out are never asked for again.",
    )
    describe.add_argument("--classes-file", required=True, type=Path,
                          help="class names: JSON list (or list of synonym lists) or text lines")
    describe.add_argument("--out", required=True, type=Path, help="output JSON file")
    describe.add_argument("--style", choices=("cupl", "clip-d"), default="cupl",
                          help="cupl: 5 questions, full sentences; clip-d: one bulleted list "
                          "of short visual features per class (default: cupl)")
    describe.add_argument("--model", required=True, help="model name at the endpoint")
    describe.add_argument("--base-url", default=os.environ.get("OPENAI_BASE_URL"),
                          help="endpoint, e.g. http://localhost:11434/v1 "
                          "(default: $OPENAI_BASE_URL, else OpenAI)")
    describe.add_argument("--api-key-env", default="OPENAI_API_KEY", metavar="NAME",
                          help="environment variable holding the API key (default: "
                          "OPENAI_API_KEY; may be unset for a --base-url that needs none)")
    describe.add_argument("--questions", type=Path, metavar="FILE",
                          help="own question templates (JSON list or one per line) with {c} "
                          "for the class name and optionally {a} for its article a/an")
    describe.add_argument("--system-prompt", help="system message ('' for none)")
    describe.add_argument("--n", type=int, help="answers per question (cupl 10, clip-d 1)")
    describe.add_argument("--n-mode", choices=("param", "repeat"), default="param",
                          help="get n answers with the API's n parameter (topped up if the "
                          "server returns fewer) or with n separate requests (default: param)")
    describe.add_argument("--temperature", type=float, help="sampling temperature "
                          "(cupl 0.99, clip-d 0)")
    describe.add_argument("--max-tokens", type=int, help="tokens per answer (cupl 50, clip-d 200)")
    describe.add_argument("--concurrency", type=int, default=8, help="requests in flight (8)")
    describe.add_argument("--timeout", type=float, default=60.0, help="seconds per request (60)")
    describe.add_argument("--retries", type=int, default=5, help="retries per request (5)")
    describe.add_argument("--backoff", type=float, default=1.0,
                          help="first retry delay in seconds, doubled each retry (1)")
    describe.add_argument("--overwrite", action="store_true",
                          help="start over instead of resuming from --out")
    _near_duplicate_options(describe)
    describe.add_argument("--no-progress", action="store_true", help="no progress bar")
    describe.set_defaults(handler=run_describe)

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
        "are missing, extra or duplicate classes, or classes with no usable description.",
    )
    check.add_argument("file", type=Path, help="description JSON file")
    check.add_argument("--classes-file", required=True, type=Path, help="class names")
    check.set_defaults(handler=run_check)

    clean = actions.add_parser(
        "clean", help="drop empty, repeated and near-duplicate descriptions",
        description="Normalise spacing, drop empty and repeated descriptions and, with an "
        "encoder, near-duplicates by text-embedding similarity.",
    )
    clean.add_argument("file", type=Path, help="description JSON file")
    clean.add_argument("--out", required=True, type=Path, help="cleaned JSON file")
    _near_duplicate_options(clean)
    clean.set_defaults(handler=run_clean)

    descriptions.set_defaults(handler=lambda args: _help(descriptions))


def _near_duplicate_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--near-dup-encoder", metavar="SPEC",
                        help="drop near-duplicates by text-embedding similarity with this "
                        "encoder (e.g. open_clip:ViT-B-32/openai)")
    parser.add_argument("--near-dup-threshold", type=float, default=0.95,
                        help="cosine similarity at or above which a description counts as a "
                        "near-duplicate of an earlier one (0.95)")
    parser.add_argument("--device", default="auto", help="device for the encoder (auto)")


def _help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 0


def _load_encoder(spec: str, device: str):
    """The text encoder for near-duplicate removal (imported late: it pulls in the models)."""
    from wca import load_encoder

    return load_encoder(spec, device=device)


def _near_duplicate_filter(args: argparse.Namespace) -> Callable | None:
    """A function cleaning a description dict with the chosen encoder, or None."""
    if not args.near_dup_encoder:
        return None
    if not 0.0 < args.near_dup_threshold <= 1.0:
        raise ValueError(f"--near-dup-threshold must be in (0, 1], got {args.near_dup_threshold}")
    from wca.descriptions.clean import clean_descriptions

    encoder = _load_encoder(args.near_dup_encoder, args.device)
    return lambda descriptions: clean_descriptions(
        descriptions, encoder.encode_texts, args.near_dup_threshold
    )


def run_describe(args: argparse.Namespace) -> int:
    from wca.descriptions.generate import GenerationConfig, generate_descriptions, load_questions

    classnames = load_classnames(args.classes_file)
    config = GenerationConfig(
        model=args.model,
        style=args.style,
        base_url=args.base_url,
        api_key_env=args.api_key_env,
        questions=load_questions(args.questions) if args.questions else None,
        system_prompt=args.system_prompt,
        n=args.n,
        n_mode=args.n_mode,
        temperature=args.temperature,
        max_tokens=args.max_tokens,
        concurrency=args.concurrency,
        timeout=args.timeout,
        max_retries=args.retries,
        backoff_base=args.backoff,
    )
    report = generate_descriptions(
        classnames,
        args.out,
        config,
        overwrite=args.overwrite,
        postprocess=_near_duplicate_filter(args),
        progress=not args.no_progress,
    )
    n_texts = sum(len(texts) for texts in report.descriptions.values())
    print(
        f"{args.out}: {len(report.descriptions)} of {len(set(classnames))} classes, "
        f"{n_texts} descriptions ({len(report.generated)} generated now, "
        f"{len(report.resumed)} from before)",
        file=sys.stderr,
    )
    if report.failed:
        print(f"{len(report.failed)} classes failed (run again to retry them):", file=sys.stderr)
        for name, reason in report.failed.items():
            print(f"  {name}: {reason}", file=sys.stderr)
        return 1
    return 0


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

    report = check_descriptions(args.file, load_classnames(args.classes_file))
    print("\n".join(report.lines()))
    return 0 if report.ok else 1


def run_clean(args: argparse.Namespace) -> int:
    from wca.descriptions.clean import clean_descriptions
    from wca.descriptions.generate import write_json_atomic

    descriptions = load_descriptions(args.file)
    cleaner = _near_duplicate_filter(args)
    cleaned = cleaner(descriptions) if cleaner else clean_descriptions(descriptions)
    before = sum(len(t) for t in descriptions.values())
    after = sum(len(t) for t in cleaned.values())
    write_json_atomic(args.out, cleaned)
    print(f"{args.out}: kept {after} of {before} descriptions", file=sys.stderr)
    return 0
