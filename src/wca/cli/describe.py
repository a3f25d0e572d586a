"""`wca describe`: class descriptions written by an LLM (CuPL or CLIP-D style)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

from wca.descriptions.io import load_classnames


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
    describe.add_argument("--output", required=True, type=Path, help="output JSON file")
    describe.add_argument("--style", choices=("cupl", "clip-d"), default="cupl",
                          help="cupl: 5 questions, full sentences; clip-d: one bulleted list "
                          "of short visual features per class (default: cupl)")
    describe.add_argument("--llm", help="the LLM: its model name at the endpoint (required)")
    describe.add_argument("--model", dest="llm_alias", metavar="LLM",
                          help="deprecated spelling of --llm")
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
    describe.add_argument("--timeout", type=float, default=60.0,
                          help="seconds a request may take, from connecting to the last byte "
                          "of its answer (60)")
    describe.add_argument("--retries", type=int, default=5, help="retries per request (5)")
    describe.add_argument("--probe-timeout", type=float, default=30.0, metavar="SECONDS",
                          help="seconds the one-token request sent before the run may take "
                          "(30; at most --timeout)")
    describe.add_argument("--max-consecutive-failures", type=int, default=3, metavar="K",
                          help="stop the run after K requests in a row failed (after their "
                          "retries) (3)")
    describe.add_argument("--backoff", type=float, default=1.0,
                          help="first retry delay in seconds, doubled each retry (1)")
    describe.add_argument("--overwrite", action="store_true",
                          help="start over instead of resuming from --out")
    near_duplicate_options(describe)
    describe.add_argument("--no-progress", action="store_true", help="no progress bar")
    describe.set_defaults(handler=run)


def near_duplicate_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--near-dup-encoder", metavar="SPEC",
                        help="drop near-duplicates by text-embedding similarity with this "
                        "encoder (e.g. open_clip:ViT-B-32/openai)")
    parser.add_argument("--near-dup-threshold", type=float, default=0.95,
                        help="cosine similarity at or above which a description counts as a "
                        "near-duplicate of an earlier one (0.95)")
    parser.add_argument("--device", default="auto", help="device for the encoder (auto)")


def load_text_encoder(spec: str, device: str):
    """The text encoder for near-duplicate removal (imported late: it pulls in the models)."""
    from wca import load_encoder

    return load_encoder(spec, device=device)


def near_duplicate_filter(args: argparse.Namespace) -> Callable | None:
    """A function cleaning a description dict with the chosen encoder, or None."""
    if not args.near_dup_encoder:
        return None
    if not 0.0 < args.near_dup_threshold <= 1.0:
        raise ValueError(f"--near-dup-threshold must be in (0, 1], got {args.near_dup_threshold}")
    from wca.descriptions.clean import clean_descriptions

    encoder = load_text_encoder(args.near_dup_encoder, args.device)
    return lambda descriptions: clean_descriptions(
        descriptions, encoder.encode_texts, args.near_dup_threshold
    )


def run(args: argparse.Namespace) -> int:
    from wca.cli import UsageError
    from wca.descriptions.generate import GenerationConfig, generate_descriptions, load_questions

    llm = args.llm
    if args.llm_alias is not None:
        if llm is not None and llm != args.llm_alias:
            raise UsageError(f"--llm {llm!r} and --model {args.llm_alias!r} disagree")
        print("wca describe: --model is deprecated, use --llm", file=sys.stderr)
        llm = args.llm_alias
    if llm is None:
        raise UsageError("describe: --llm is required (the model name at the endpoint)")
    classnames = load_classnames(args.classes_file)
    config = GenerationConfig(
        model=llm,
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
        probe_timeout=args.probe_timeout,
        max_consecutive_failures=args.max_consecutive_failures,
    )
    report = generate_descriptions(
        classnames,
        args.output,
        config,
        overwrite=args.overwrite,
        postprocess=near_duplicate_filter(args),
        progress=not args.no_progress,
    )
    n_classes = len(set(classnames))
    kept = len(report.descriptions)
    if report.stopped:
        where = f"{args.output} has {kept} of {n_classes} classes" if kept else "nothing written"
        print(f"wca: error: {report.stopped}; {where}", file=sys.stderr)
        return 1
    n_texts = sum(len(texts) for texts in report.descriptions.values())
    summary = f"{kept} of {n_classes} classes, {n_texts} descriptions" if kept else "not written"
    print(
        f"{args.output}: {summary} ({len(report.generated)} generated now, "
        f"{len(report.resumed)} from before)",
        file=sys.stderr,
    )
    if report.failed:
        print(f"{len(report.failed)} classes failed (run again to retry them):", file=sys.stderr)
        for name, reason in report.failed.items():
            print(f"  {name}: {reason}", file=sys.stderr)
        return 1
    return 0
