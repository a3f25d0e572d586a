"""The spellings under which one dataset is known. A leaf module (it imports nothing of wca),
so that the dataset loaders and the description sets can both use it without importing each
other."""

from __future__ import annotations

# The WCA authors' spellings of registered names (their configs and description folders).
ALIASES = {"oxford-pet": "oxford-pets", "place365": "places365"}


def dataset_key(name: str) -> str:
    """The key under which spellings of one dataset match: lower case, ``_`` as ``-``, the
    authors' spellings as ours (``oxford_pet`` and ``Oxford-Pets`` both give ``oxford-pets``)."""
    key = name.lower().replace("_", "-")
    return ALIASES.get(key, key)
