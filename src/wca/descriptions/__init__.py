"""Class descriptions: reading published sets, checking, fetching and generating them."""

from wca.descriptions.io import (
    duplicate_names,
    load_classnames,
    load_descriptions,
    load_templates,
    load_words,
    match_descriptions,
)

__all__ = [
    "duplicate_names",
    "load_classnames",
    "load_descriptions",
    "load_templates",
    "load_words",
    "match_descriptions",
]
