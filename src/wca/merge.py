"""Results that merge: a cell (the same data, model, crops and texts) evaluated again with other
methods adds them to its result file, so that one file holds every method of the cell and
``wca report --baseline NAME`` pairs them all.

Two runs of one cell agree on every setting of :data:`wca.results.IDENTITY`; their methods are
pooled by name. A method the file already has with other options is never replaced unasked:
such a run writes beside the file, under a name that holds its methods
(:func:`beside`), and merges there.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from wca.results import ResultFile, Settings


def conflicts(existing: ResultFile, settings: Settings) -> list[str]:
    """The methods of ``settings`` that ``existing`` holds with other options."""
    mine, wanted = existing.config.method_options(), settings.method_options()
    return [name for name, options in wanted.items() if name in mine and mine[name] != options]


def beside(output: Path, settings: Settings) -> Path:
    """The file beside ``output`` for a run whose methods conflict with it: its methods and a
    short digest of their options in the name (``r__wca-3f2a9c1d.json``)."""
    options = settings.method_options()
    digest = hashlib.sha256(json.dumps(options, sort_keys=True).encode()).hexdigest()[:8]
    methods = "+".join(options)
    return output.with_name(f"{output.stem}__{methods[:60]}-{digest}{output.suffix}")


def merged(existing: ResultFile, new: ResultFile, primary: str | None = None) -> ResultFile:
    """``existing`` with ``new``'s methods added (a method of both: ``new``'s numbers), in
    ``existing``'s order then ``new``'s; clip_benchmark's ``metrics`` of ``primary`` (default:
    the existing file's primary method)."""
    methods = {**existing.results.methods, **new.results.methods}
    by_method = {**existing.metrics_by_method, **new.metrics_by_method}
    primary = primary or existing.primary_method or new.primary_method
    if primary not in methods:
        primary = new.primary_method
    entries = {next(iter(entry)): entry for entry in existing.config.methods or []}
    entries.update({next(iter(entry)): entry for entry in new.config.methods or []})
    config = new.config.model_copy(update={"methods": list(entries.values())})
    extra_old = existing.config.model_extra or {}
    if isinstance(extra_old.get("seconds"), dict) and isinstance(
        (config.model_extra or {}).get("seconds"), dict
    ):
        seconds = dict(config.model_extra["seconds"])
        seconds["scoring"] = seconds.get("scoring", 0) + extra_old["seconds"].get("scoring", 0)
        config.model_extra["seconds"] = seconds
    results = new.results.model_copy(
        update={
            "methods": methods,
            "stream_order": new.results.stream_order or existing.results.stream_order,
        }
    )
    return new.model_copy(
        update={
            "results": results,
            "config": config,
            "metrics_by_method": by_method,
            "primary_method": primary,
            "metrics": by_method[primary],
        }
    )
