"""`wca methods [PATTERN]` and `wca datasets [PATTERN]`: what the registries hold, filtered as
``timm.list_models`` filters (``wca methods 'tda*'``, ``wca datasets cifar``). Parsing imports
no registry: the handlers do."""

from __future__ import annotations

import argparse
import inspect
import textwrap
from collections.abc import Iterator

CAPABILITY_TEXT = {
    "uses_crops": "reads the crops",
    "pooled_runs": "scores runs from a crop pool at once",
    "own_probabilities": "its own probabilities",
    "online": "online: a memory over the stream of images",
    "evidence": "gives evidence (crop weights, description scores)",
}


def register(subparsers: argparse._SubParsersAction) -> None:
    methods = subparsers.add_parser(
        "methods",
        help="list the methods: what each does and reads, its options and their defaults",
        description="List the registered methods (eval's --methods, the API's method=) whose "
        "names PATTERN matches (shell wildcards, or a part of the name; case insensitive): "
        "each one's summary and capabilities and, for a pattern, its options with their "
        "defaults (--set methods.NAME.OPTION=VALUE sets one).",
    )
    methods.add_argument("pattern", nargs="?", metavar="PATTERN", help="e.g. tda, 'wca*'")
    methods.set_defaults(handler=run_methods)
    datasets = subparsers.add_parser(
        "datasets",
        help="list the datasets --dataset reads, with their splits and options",
        description="List the registered datasets whose names PATTERN matches (shell "
        "wildcards, or a part of the name; case insensitive), with the layout each reads, its "
        "splits (the default first) and its options.",
    )
    datasets.add_argument("pattern", nargs="?", metavar="PATTERN", help="e.g. imagenet, cifar")
    datasets.set_defaults(handler=run_datasets)


def _wrapped(text: str, indent: str, rest: str = " " * 19) -> list[str]:
    """``text`` wrapped at 96 columns, its first line indented by ``indent``, the others by
    ``rest``."""
    return textwrap.wrap(text, 96, initial_indent=indent, subsequent_indent=rest)


def type_text(field) -> str:
    """An option's type, short: ``float``, ``full|confident``, ``tuple``; ``or none``."""
    from wca.cli.settings import _scalar

    kind, choices = _scalar(field.annotation)
    if choices:
        text = "|".join(map(str, choices))
    elif kind is str and field.default is not None and not isinstance(field.default, str):
        text = type(field.default).__name__  # a pair of bounds, ...
    else:
        text = kind.__name__
    return text + (" or none" if field.default is None else "")


def method_lines(name: str, details: bool) -> Iterator[str]:
    """One method: its summary and capabilities; with ``details`` its options and docs."""
    from wca.methods.registry import METHODS, PER_DATASET, SUMMARIES, head_class, options_model

    capabilities = [CAPABILITY_TEXT[c] for c, on in head_class(name).capabilities().items() if on]
    yield f"{name:<18} {SUMMARIES[name]}"
    yield from _wrapped("; ".join(capabilities) or "scores the full view", " " * 19)
    if not details:
        return
    fields = options_model(name).model_fields
    indent = " " * 19
    yield f"{indent}options (--set methods.{name}.OPTION=VALUE):" if fields else indent + "none"
    for option, field in fields.items():
        default = "none" if field.default is None else repr(field.default)
        if name in PER_DATASET and field.default is None:
            default = "unset: the dataset's value"
        if option == "logit_scale":
            default = f"the model's own ({field.default} for a text function without one)"
        if option == "dataset" and name in PER_DATASET:
            default = (
                f"the task's dataset: {PER_DATASET[name].describe()} "
                f"(--set methods.{name}.dataset=imagenet takes ImageNet's anywhere)"
            )
        yield from _wrapped(f"{option} ({type_text(field)}): {default}", " " * 21, " " * 23)
    doc = inspect.getdoc(METHODS[name])
    if doc:
        yield from _wrapped(doc.replace("``", ""), " " * 19)


def run_methods(args: argparse.Namespace) -> int:
    from wca.methods import METHODS

    names = METHODS.list(args.pattern)
    if not names:
        print(f"no method matches {args.pattern!r} (`wca methods` lists them all)")
        return 1
    for name in names:
        print("\n".join(method_lines(name, details=args.pattern is not None)))
    if args.pattern is None:
        print("\n`wca methods NAME` shows a method's options and their defaults")
    return 0


def dataset_lines(name: str) -> Iterator[str]:
    """One dataset: the layout it reads, its splits and its options."""
    from wca.datasets import DATASETS
    from wca.datasets.base import SPLITS

    loader = DATASETS[name]
    summary = " ".join((inspect.getdoc(loader) or name).replace("``", "").split())
    summary = summary.split(". ")[0].rstrip(".") + "."
    shown = f"{name}/NAME" if "name" in inspect.signature(loader).parameters else name
    yield from _wrapped(f"{shown:<18} {summary}", "")
    splits = SPLITS.get(name)
    options = [
        f"{p.name}={p.default!r}"
        for p in inspect.signature(loader).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in ("descriptions_dir", "name")
    ]
    text = f"splits: {', '.join(splits) if splits else 'any (a folder of the root)'}"
    yield from _wrapped(text + (f"; options: {', '.join(options)}" if options else ""), " " * 19)


def run_datasets(args: argparse.Namespace) -> int:
    from wca.datasets import DATASETS

    names = DATASETS.list(args.pattern)
    if not names:
        print(f"no dataset matches {args.pattern!r} (`wca datasets` lists them all)")
        return 1
    for name in names:
        print("\n".join(dataset_lines(name)))
    return 0
