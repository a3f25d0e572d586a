"""`wca models`: the model backends, the spec forms each accepts and what each can load."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator

from wca.cli import UsageError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "models",
        help="list the model backends, their spec forms and model families",
        description="List the model specs --model accepts (BACKEND:MODEL, a bare path to a "
        "checkpoint file or model folder, or a named model such as demo), with one example "
        "each: the transformers families hf: loads (by the checkpoint's model_type) and the "
        "pretrained pairs open_clip knows.",
    )
    parser.add_argument(
        "--backend", metavar="NAME", help="list only this backend (hf, open_clip, ...)"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from wca.encoders import BACKENDS  # the model libraries: imported when listing, not parsing

    if args.backend is not None and args.backend not in BACKENDS:
        known = ", ".join(sorted(BACKENDS))
        raise UsageError(f"--backend {args.backend!r}: no such backend (known: {known})")
    for prefix in sorted(BACKENDS) if args.backend is None else [args.backend]:
        print("\n".join(backend_lines(prefix)), end="\n\n")
    if args.backend is None:
        print("\n".join(bare_lines()))
    return 0


def bare_lines() -> Iterator[str]:
    """The specs without a backend prefix: paths (backend inferred) and named models."""
    from wca.encoders.registry import BARE_FORMS, NAMED_MODELS

    yield "without a prefix (the backend inferred from what is on disk):"
    for form, what, example in BARE_FORMS:
        yield f"  {form:<34} {what}"
        yield f"  {'':<34} e.g. {example}"
    for name, (what, _) in sorted(NAMED_MODELS.items()):
        yield f"  {name:<34} {what}"


def backend_lines(prefix: str) -> Iterator[str]:
    """One backend: its summary, its spec forms with an example each, and what it loads."""
    from wca.encoders.registry import BACKENDS, SPEC_FORMS

    module = sys.modules[BACKENDS[prefix].__module__]
    summary = (module.__doc__ or prefix).strip().splitlines()[0]
    yield f"{prefix}: {summary}"
    for form, what, example in SPEC_FORMS.get(prefix, ()):
        yield f"  {form:<34} {what}"
        yield f"  {'':<34} e.g. {example}"
    yield from DETAILS.get(prefix, lambda: iter(()))()


def _hf_families() -> Iterator[str]:
    from wca.encoders.hf_families import FAMILIES

    yield "  families, chosen by the checkpoint config's model_type:"
    for family in sorted(FAMILIES.values(), key=lambda f: f.model_type):
        yield f"    {family.model_type:<14} {family.title:<42} e.g. hf:{family.example}"


def _open_clip_pairs() -> Iterator[str]:
    import open_clip

    pairs = open_clip.list_pretrained()
    tags: dict[str, list[str]] = {}
    for arch, tag in pairs:
        tags.setdefault(arch, []).append(tag)
    yield f"  pretrained pairs (open_clip:ARCH/TAG), {len(pairs)} in all:"
    for arch, names in tags.items():
        yield f"    {arch}: {', '.join(names)}"


# What else each backend lists beyond its spec forms.
DETAILS: dict[str, Callable[[], Iterator[str]]] = {
    "hf": _hf_families,
    "open_clip": _open_clip_pairs,
}
