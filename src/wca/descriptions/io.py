"""Reading class names, templates and description sets in the published JSON formats."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_text(path: str | Path) -> str:
    """A UTF-8 text file's content; a missing file, a folder or other bytes than UTF-8 is an
    error that names the file."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path}: is a folder, expected a file")
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    except UnicodeDecodeError as error:
        raise ValueError(
            f"{path}: not UTF-8 text (byte {error.object[error.start]:#04x} at offset "
            f"{error.start}); save it as UTF-8"
        ) from None
    except OSError as error:
        raise ValueError(f"{path}: cannot be read ({error.strerror})") from None


class _DuplicateKeys(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object's pairs as a dict; _DuplicateKeys naming the keys that occur more than once
    (``json`` would silently keep the last value of each)."""
    data = dict(pairs)
    if len(data) < len(pairs):
        seen: set[str] = set()
        repeated = [key for key, _ in pairs if key in seen or seen.add(key)]
        raise _DuplicateKeys(", ".join(repr(key) for key in dict.fromkeys(repeated)))
    return data


def read_json(path: str | Path) -> Any:
    """A JSON file's content; a missing file, bad JSON or a key that occurs twice in one object
    (a class whose descriptions would silently be replaced by a later list) is an error that
    names the file."""
    text = read_text(path)
    try:
        return json.loads(text, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None
    except _DuplicateKeys as error:
        keys = str(error)
        what = "duplicate keys" if ", " in keys else "duplicate key"
        raise ValueError(
            f"{path}: {what} {keys}: a JSON object keeps only the last value of equal keys, so "
            "name each key once (merge their lists)"
        ) from None


def load_descriptions(path: str | Path) -> dict[str, list[str]]:
    """A description set ``{class name: [text, ...]}`` (CuPL sentences or CLIP-D descriptors)."""
    return validate_descriptions(read_json(path), path)


def validate_descriptions(data: Any, source: str | Path = "descriptions") -> dict[str, list[str]]:
    """``data`` if it is ``{class name: [text, ...]}``, else an error naming ``source`` and the
    first entry of the wrong type (a string where a list belongs would read as characters)."""
    if not isinstance(data, dict):
        kind = type(data).__name__
        raise ValueError(f"{source}: expected an object {{class: [text, ...]}}, got a {kind}")
    for name, texts in data.items():
        if not isinstance(name, str):
            raise ValueError(f"{source}: class name {name!r} is not a string")
        if not isinstance(texts, list | tuple) or not all(isinstance(t, str) for t in texts):
            raise ValueError(
                f"{source}: the descriptions of {name!r} must be a list of strings, got {texts!r}"
            )
    return {name: list(texts) for name, texts in data.items()}


def load_classnames(path: str | Path) -> list[str]:
    """Class names in label order from a JSON list (of names, or of synonym lists: the first
    synonym is taken), or from a text file with one name per line (blank lines and lines
    starting with ``#`` are skipped). Underscores become spaces."""
    path = Path(path)
    if path.suffix == ".json":
        data = read_json(path)
    else:
        lines = [line.strip() for line in read_text(path).splitlines()]
        data = [line for line in lines if line and not line.startswith("#")]
    if not isinstance(data, list) or not data:
        raise ValueError(f"{path}: expected a non-empty list of class names")
    names = []
    for index, entry in enumerate(data):
        if isinstance(entry, list) and entry:
            entry = entry[0]
        if not isinstance(entry, str) or not entry.strip():
            raise ValueError(f"{path}: class {index} is not a name: {entry!r}")
        names.append(entry.replace("_", " ").strip())
    return names


def load_templates(path: str | Path) -> list[str]:
    """Prompt templates: a JSON list of strings with ``{}`` where the class name goes."""
    data = read_json(path)
    if not isinstance(data, list) or not data:
        raise ValueError(f"{path}: expected a non-empty list of templates")
    for template in data:
        if not isinstance(template, str) or "{}" not in template:
            raise ValueError(f"{path}: template {template!r} has no {{}} for the class name")
    return data


def load_words(path: str | Path) -> list[str]:
    """A word list (JSON list of strings), e.g. WaffleCLIP's random words; blanks dropped."""
    data = read_json(path)
    if not isinstance(data, list) or not all(isinstance(w, str) for w in data):
        raise ValueError(f"{path}: expected a JSON list of words")
    words = [w for w in data if w.strip()]
    if not words:
        raise ValueError(f"{path}: the word list is empty")
    return words


def class_key(name: str) -> str:
    """A class name with case, ``_`` and spacing differences removed, for loose matching."""
    return " ".join(name.replace("_", " ").lower().split())


def match_descriptions(
    classnames: list[str], descriptions: dict[str, list[str]], source: str | Path = "descriptions"
) -> list[list[str]]:
    """The descriptions of each class in label order (never the file's key order).

    Keys match class names exactly, else ignoring case and ``_``/space differences (two keys
    that match one class that way are an error). Classes without a key, or with no non-empty
    description, are reported together by name.
    """

    loose: dict[str, list[str]] = {}
    for key in descriptions:
        loose.setdefault(class_key(key), []).append(key)
    matched, missing = [], []
    for name in classnames:
        keys = [name] if name in descriptions else loose.get(class_key(name), [])
        if len(keys) > 1:
            raise ValueError(
                f"{source}: keys {', '.join(map(repr, keys))} all match class {name!r} (case, "
                "'_' and spacing aside); keep one"
            )
        texts = descriptions[keys[0]] if keys else None
        texts = [t.strip() for t in texts or [] if t.strip()]
        if not texts:
            missing.append(name)
        matched.append(texts)
    if missing:
        shown = ", ".join(repr(m) for m in missing[:20]) + (" ..." if len(missing) > 20 else "")
        raise ValueError(f"{source}: no descriptions for {len(missing)} classes: {shown}")
    return matched


def duplicate_names(classnames: list[str]) -> list[str]:
    """Class names that occur more than once (such classes can never be told apart)."""
    seen: set[str] = set()
    return sorted({name for name in classnames if name in seen or seen.add(name)})
