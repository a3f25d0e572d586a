"""`wca models [PATTERN]`: the model backends, the spec forms each accepts and what each can
load, filtered as ``timm.list_models('*vit*')`` filters, with the weights already on disk
marked."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator

from wca.cli import UsageError

ON_DISK = "*"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "models",
        help="list the model specs --model accepts; PATTERN filters, * marks weights on disk",
        description="List the model specs --model accepts (open_clip's ARCH/TAG, BACKEND:MODEL, "
        "a bare path to a checkpoint file or model folder, or a named model such as demo), with "
        "one example each: the transformers families hf: loads (by the checkpoint's "
        "model_type) and the pretrained pairs open_clip knows. With PATTERN (shell wildcards, "
        "or a part of the name; case insensitive), the models it matches, one a line. "
        f"{ON_DISK} marks weights already on disk (open_clip's and the Hugging Face cache), "
        "which load offline.",
    )
    parser.add_argument("pattern", nargs="?", metavar="PATTERN", help="e.g. vit, 'ViT-B-*'")
    parser.add_argument(
        "--backend", metavar="NAME", help="list only this backend (hf, open_clip, ...)"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from wca.encoders import BACKENDS  # the model libraries: imported when listing, not parsing

    if args.backend is not None and args.backend not in BACKENDS:
        known = ", ".join(sorted(BACKENDS))
        raise UsageError(f"--backend {args.backend!r}: no such backend (known: {known})")
    prefixes = sorted(BACKENDS) if args.backend is None else [args.backend]
    if args.pattern is not None:
        lines = list(matching_lines(args.pattern, prefixes))
        print("\n".join(lines) if lines else f"no model matches {args.pattern!r}")
        return 0 if lines else 1
    for prefix in prefixes:
        print("\n".join(backend_lines(prefix)), end="\n\n")
    if args.backend is None:
        print("\n".join(bare_lines()), end="\n\n")
        print("\n".join(image_lines()))
    print(f"\n{ON_DISK}: weights on disk (loads offline)")
    return 0


def on_disk(spec: str) -> bool:
    """Whether the weights of ``spec`` are on disk (:func:`wca.specs.weights_file`)."""
    from pathlib import Path

    from wca.specs import weights_file

    try:
        found = weights_file(spec)
    except Exception:  # an architecture open_clip cannot describe: not on disk, as far as known
        return False
    return found is not None and Path(found).exists()


def _mark(spec: str) -> str:
    return f" {ON_DISK}" if on_disk(spec) else ""


def matching_lines(pattern: str, prefixes: list[str]) -> Iterator[str]:
    """The named models, open_clip pairs, hf families and cached Hub models ``pattern``
    matches, one spec a line."""
    from wca.registry import matching
    from wca.specs import NAMED

    if "open_clip" in prefixes:
        for name in matching(NAMED, pattern):
            yield f"{name:<44} {NAMED[name][0]}{_mark(name)}"
        import open_clip

        pairs = [f"{arch}/{tag}" for arch, tag in open_clip.list_pretrained()]
        for pair in matching(pairs, pattern):
            yield f"{pair:<44} open_clip:{pair}{_mark(pair)}"
    if "hf" in prefixes:
        from wca.encoders.hf_families import FAMILIES

        by_text = {f"{f.model_type} {f.title} {f.example}": f for f in FAMILIES.values()}
        for text in matching(by_text, pattern):
            family = by_text[text]
            spec = f"hf:{family.example}"
            yield f"{spec:<44} {family.title} (model_type {family.model_type}){_mark(spec)}"
    for _, spec in _cached_hub_models(pattern):
        if spec.split(":", 1)[0] in prefixes:
            yield f"{spec:<44} in the Hugging Face cache {ON_DISK}"


def _cached_hub_models(pattern: str) -> list[tuple[str, str]]:
    """The model repositories of the Hugging Face cache that ``pattern`` matches, with their
    spec (open_clip's own repositories hold open_clip_config.json)."""
    from huggingface_hub import scan_cache_dir

    from wca.registry import matching

    try:
        repos = {r.repo_id: r for r in scan_cache_dir().repos if r.repo_type == "model"}
    except Exception:  # no cache folder yet
        return []
    found = []
    for repo_id in matching(repos, pattern):
        files = {f.file_name for revision in repos[repo_id].revisions for f in revision.files}
        own = "open_clip_config.json" in files
        found.append((repo_id, f"open_clip:hf-hub:{repo_id}" if own else f"hf:{repo_id}"))
    return found


def bare_lines() -> Iterator[str]:
    """The specs without a backend prefix: paths (backend inferred) and named models."""
    from wca.encoders.registry import BARE_FORMS, NAMED_MODELS

    yield "without a prefix:"
    for form, what, example in BARE_FORMS:
        yield f"  {form:<34} {what}"
        yield f"  {'':<34} e.g. {example}"
    for name, (what, _) in sorted(NAMED_MODELS.items()):
        yield f"  {name:<34} {what}{_mark(name)}"


def image_lines() -> Iterator[str]:
    """The image-only models a second encoder of the views may be (``--aux-model``)."""
    from wca.encoders.vision import IMAGE_FORMS

    yield "--aux-model (a second image encoder, for cosmic) also takes image-only models:"
    for form, what, example in IMAGE_FORMS:
        yield f"  {form:<34} {what}"
        yield f"  {'':<34} e.g. {example}"


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
        example = f"hf:{family.example}"
        yield f"    {family.model_type:<14} {family.title:<42} e.g. {example}{_mark(example)}"


def _open_clip_pairs() -> Iterator[str]:
    import open_clip

    pairs = open_clip.list_pretrained()
    tags: dict[str, list[str]] = {}
    for arch, tag in pairs:
        tags.setdefault(arch, []).append(tag + _mark(f"{arch}/{tag}"))
    yield f"  pretrained pairs (ARCH/TAG, or open_clip:ARCH/TAG), {len(pairs)} in all:"
    for arch, names in tags.items():
        yield f"    {arch}: {', '.join(names)}"


# What else each backend lists beyond its spec forms.
DETAILS: dict[str, Callable[[], Iterator[str]]] = {
    "hf": _hf_families,
    "open_clip": _open_clip_pairs,
}
