"""Result files written by older wca versions, read as today's schema (:mod:`wca.results`):
version 1 (wca 0.2: no ``schema_version``, demo files without clip_benchmark's fields; what it
did not record stays unknown) and version 2 (wca 0.3: settings under their old names)."""

from __future__ import annotations

from typing import Any


def as_current(document: dict[str, Any], version: int) -> dict[str, Any]:
    """``document``, a file of schema ``version``, in the current schema's shape."""
    if version == 1:
        document = _from_version_1(document)
    if version <= 2:
        document = _names_of_version_3(document)
    return document


def _from_version_1(document: dict[str, Any]) -> dict[str, Any]:
    """A wca 0.2 file in this schema: its demo files had no clip_benchmark fields; nothing it
    did not record is guessed."""
    from wca.results import metrics_of  # the schema's own, which imports this module

    document = dict(document)
    results = document["results"]
    for method in results["methods"].values():
        method.setdefault("options", {})
    config = document.get("config", {})
    if "metrics_by_method" not in document:
        document["metrics_by_method"] = {
            name: metrics_of(method, None) for name, method in results["methods"].items()
        }
    by_method = document["metrics_by_method"]
    primary = document.get("primary_method") or (
        "wca" if "wca" in by_method else next(iter(by_method))
    )
    document.setdefault("primary_method", primary)
    document.setdefault("metrics", by_method[primary])
    document.setdefault("dataset", config.get("dataset") or "?")
    document.setdefault("model", str(config.get("model", "?")))
    document.setdefault("pretrained", "")
    document["schema_version"] = 1
    return document


def _names_of_version_3(document: dict[str, Any]) -> dict[str, Any]:
    """A file of wca 0.2 or 0.3 with its settings under today's names (``n_samples`` ->
    ``n_crops``, ``data_path`` -> ``data_root``, ``half`` -> ``fp16_cache``, ``views`` ->
    ``fidelity``)."""
    document = {**document, "results": dict(document["results"])}
    config = dict(document.get("config") or {})
    for old, new in (("n_samples", "n_crops"), ("data_path", "data_root"), ("half", "fp16_cache")):
        if old in config:
            config[new] = config.pop(old)
    if "views" in config:
        views = config.pop("views")
        config["fidelity"] = None if views is None else views == "fidelity"
    config.pop("model_size", None)
    document["config"] = config
    if "n_samples" in document["results"]:
        document["results"]["n_crops"] = document["results"].pop("n_samples")
    return document
