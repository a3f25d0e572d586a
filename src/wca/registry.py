"""One small registry type for everything wca looks up by name: methods, model backends and
named models, model families, datasets and crop strategies (as timm keeps its models).

A registry maps names to objects with one policy: a name (or alias) is registered once; a
second registration is an error naming both. Lookups accept the registry's spellings
(``normalize``: e.g. ``-``/``_`` alike for datasets) and aliases; an unknown name is one line
that lists the known ones. ``list(pattern)`` filters names with shell wildcards, case
insensitively (``list("wca*")``, ``list("*vit*")``), as ``timm.list_models`` does.
"""

from __future__ import annotations

import contextlib
import fnmatch
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Generic, TypeVar

T = TypeVar("T")


def _same(name: str) -> str:
    return name


def matching(names: Iterable[str], pattern: str | None) -> list[str]:
    """``names`` that ``pattern`` matches, sorted: shell wildcards, case insensitive; a pattern
    without wildcards matches names containing it (``vit``: every ``*vit*``); None: all."""
    if not pattern:
        return sorted(names)
    pattern = pattern.lower() if any(c in pattern for c in "*?[") else f"*{pattern.lower()}*"
    return sorted(name for name in names if fnmatch.fnmatchcase(name.lower(), pattern))


class Registry(Mapping[str, T], Generic[T]):
    """Names -> objects of one ``kind`` (``"method"``, ``"dataset"``...), read as a mapping."""

    def __init__(self, kind: str, normalize: Callable[[str], str] = _same) -> None:
        self.kind = kind
        self._normalize = normalize
        self._entries: dict[str, T] = {}
        self._keys: dict[str, str] = {}  # normalised name or alias -> registered name

    def register(self, name: str, obj: T | None = None, *, aliases: tuple[str, ...] = ()) -> Any:
        """Register ``obj`` under ``name`` (and ``aliases``); without ``obj``, a decorator."""

        def add(value: T) -> T:
            for key in (name, *aliases):
                known = self._keys.get(self._normalize(key))
                if known is not None:
                    raise ValueError(f"{self.kind} {key!r} is already registered (as {known!r})")
            for key in (name, *aliases):
                self._keys[self._normalize(key)] = name
            self._entries[name] = value
            return value

        return add if obj is None else add(obj)

    @contextlib.contextmanager
    def temporarily(self, name: str, obj: T) -> Iterator[T]:
        """``obj`` registered under ``name`` inside the block only (tests, experiments)."""
        self.register(name, obj)
        try:
            yield obj
        finally:
            del self._entries[name]
            self._keys = {k: v for k, v in self._keys.items() if v != name}

    def canonical(self, name: str) -> str | None:
        """The registered name that ``name`` spells (an alias, another normalised spelling),
        or None."""
        return self._keys.get(self._normalize(name)) if isinstance(name, str) else None

    def get_entry(self, name: str) -> T:
        """The object of ``name``; an unknown name raises one line listing the known ones."""
        known = self.canonical(name)
        if known is None:
            raise ValueError(f"unknown {self.kind} {name!r} (known: {', '.join(self)})")
        return self._entries[known]

    def list(self, pattern: str | None = None) -> list[str]:
        """The registered names, sorted; with ``pattern``, those it matches (:func:`matching`)."""
        return matching(self._entries, pattern)

    def __getitem__(self, name: str) -> T:
        known = self.canonical(name)
        if known is None:
            raise KeyError(name)
        return self._entries[known]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.canonical(name) is not None

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {len(self)} entries)"
