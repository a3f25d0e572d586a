"""Class descriptions: reading published sets, checking, cleaning, fetching and generating them."""

from __future__ import annotations

import importlib
from typing import Any

from wca.descriptions.check import CheckReport, check_descriptions
from wca.descriptions.clean import (
    clean_descriptions,
    parse_descriptors,
    parse_sentences,
    remove_near_duplicates,
)
from wca.descriptions.io import (
    class_key,
    duplicate_names,
    load_classnames,
    load_descriptions,
    load_templates,
    load_words,
    match_descriptions,
)

# Imported on first use: generation pulls in the openai client, fetching httpx.
_LAZY = {
    "generate_descriptions": "wca.descriptions.generate",
    "GenerationConfig": "wca.descriptions.generate",
    "GenerationReport": "wca.descriptions.generate",
    "fetch": "wca.descriptions.fetch",
    "published_sets": "wca.descriptions.fetch",
    "default_cache_dir": "wca.descriptions.fetch",
    "FetchError": "wca.descriptions.fetch",
}

__all__ = [
    "CheckReport",
    "check_descriptions",
    "class_key",
    "clean_descriptions",
    "duplicate_names",
    "load_classnames",
    "load_descriptions",
    "load_templates",
    "load_words",
    "match_descriptions",
    "parse_descriptors",
    "parse_sentences",
    "remove_near_duplicates",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'wca.descriptions' has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)
