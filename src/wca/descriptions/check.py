"""Check a description set against a class list before spending an evaluation on it.

Class names match keys the way ``match_descriptions`` matches them: exactly, else ignoring
case and ``_``/space differences. The JSON is read with duplicate keys kept, because a plain
``json.load`` silently keeps only the last of two equal keys. Descriptions longer than a
model's text context (cut when encoded) are found with that model's tokenizer, or CLIP's BPE.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from wca.descriptions.io import class_key, duplicate_names, read_text

if TYPE_CHECKING:
    from wca.encoders.tokens import LongText, TokenLimit

BARE_SHARE = 0.2
LONG_SHOWN = 10  # over-long descriptions listed by name; the rest are counted


@dataclass
class CheckReport:
    """Problems found in a description set; ``ok`` when there are none."""

    source: str
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    duplicate_keys: list[str] = field(default_factory=list)
    duplicate_classes: list[str] = field(default_factory=list)
    unusable: list[str] = field(default_factory=list)
    n_classes: int = 0
    n_descriptions: int = 0
    n_naming_class: int = 0  # descriptions that contain their class name
    long_texts: list[LongText] = field(default_factory=list)  # over the tokenizer's context
    tokenizer: str = ""
    context: int = 0

    @property
    def bare_phrases(self) -> bool:
        """Whether the texts look like CLIP-D descriptor phrases ("a long, hooked bill") rather
        than the sentences cupl, wca and awt expect ("A bald eagle has a hooked bill."): fewer
        than 20% of them name their class (published CuPL sets: about 75%)."""
        return self.n_descriptions > 0 and self.n_naming_class < BARE_SHARE * self.n_descriptions

    @property
    def ok(self) -> bool:
        problems = (self.missing, self.extra, self.duplicate_keys, self.duplicate_classes)
        return not any(problems) and not self.unusable and not self.long_texts

    def lines(self) -> list[str]:
        """A human-readable report, one finding per line."""
        sections = (
            ("missing classes (in the class list, not in the file)", self.missing),
            ("extra classes (in the file, not in the class list)", self.extra),
            ("duplicate keys in the file", self.duplicate_keys),
            ("duplicate names in the class list", self.duplicate_classes),
            ("classes with no usable description", self.unusable),
        )
        lines = [
            f"{self.source}: {self.n_classes} classes, {self.n_descriptions} descriptions"
        ]
        for title, names in sections:
            if names:
                lines.append(f"{title}: {len(names)}")
                lines += [f"  {name}" for name in names]
        if self.long_texts:
            lines.append(
                f"descriptions longer than the {self.context}-token text context of "
                f"{self.tokenizer} (cut when encoded): {len(self.long_texts)}"
            )
            lines += [f"  {long.shown()}" for long in self.long_texts[:LONG_SHOWN]]
            if len(self.long_texts) > LONG_SHOWN:
                lines.append(f"  ... and {len(self.long_texts) - LONG_SHOWN} more")
        if self.bare_phrases:
            lines.append(
                f"warning: only {self.n_naming_class} of {self.n_descriptions} descriptions name "
                "their class: these look like CLIP-D descriptor phrases (clip-d.json), not the "
                "sentences that cupl, wca and awt score (cupl.json); as WCA's descriptions they "
                "lose accuracy"
            )
        lines.append("ok" if self.ok else "problems found")
        return lines


def read_pairs(path: str | Path) -> list[tuple[str, object]]:
    """The (key, value) pairs of a JSON object file, duplicates included, in file order."""
    text = read_text(path)
    try:
        pairs = json.loads(text, object_pairs_hook=lambda items: items)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(pairs, list) or not all(isinstance(p, tuple) for p in pairs):
        raise ValueError(f"{path}: expected an object {{class: [text, ...]}}")
    return pairs


def _usable(value: object) -> int:
    """How many non-blank strings a description entry holds (0 if it is not a list)."""
    if not isinstance(value, list):
        return 0
    return sum(isinstance(t, str) and bool(t.strip()) for t in value)


def check_descriptions(
    path: str | Path, classnames: list[str], tokens: TokenLimit | None = None
) -> CheckReport:
    """Compare the description file at ``path`` with ``classnames`` (in label order), and find
    descriptions longer than the context of ``tokens`` (default: CLIP's BPE, 77 tokens; see
    :mod:`wca.encoders.tokens`)."""
    from wca.encoders.tokens import clip_bpe_limit, long_texts

    pairs = read_pairs(path)
    report = CheckReport(source=str(path), n_classes=len(pairs))
    tokens = tokens or clip_bpe_limit()
    texts = {}  # the usable texts of each key, duplicates merged, in file order
    for key, value in pairs:
        if isinstance(value, list):
            usable = [t for t in value if isinstance(t, str) and t.strip()]
            texts[key] = texts.get(key, []) + usable
    found = long_texts(texts, tokens)
    if found is None:
        raise ValueError(f"{tokens.name} cannot count tokens")
    report.long_texts = found
    report.tokenizer, report.context = tokens.name, tokens.context
    report.duplicate_classes = duplicate_names(classnames)

    exact: dict[str, object] = {}
    loose: dict[str, object] = {}
    seen_keys: dict[str, str] = {}
    for key, value in pairs:
        if class_key(key) in seen_keys:
            first = seen_keys[class_key(key)]
            report.duplicate_keys.append(key if key == first else f"{key} (same as {first})")
        seen_keys.setdefault(class_key(key), key)
        exact[key] = value
        loose.setdefault(class_key(key), value)
        report.n_descriptions += _usable(value)

    used: set[str] = set()
    for name in dict.fromkeys(classnames):
        if name in exact:
            value = exact[name]
            used.add(class_key(name))
        elif class_key(name) in loose:
            value = loose[class_key(name)]
            used.add(class_key(name))
        else:
            report.missing.append(name)
            continue
        if not _usable(value):
            report.unusable.append(name)
        elif isinstance(value, list):
            report.n_naming_class += sum(
                isinstance(t, str) and class_key(name) in class_key(t) for t in value
            )
    report.extra = [key for key, _ in pairs if class_key(key) not in used]
    report.extra = list(dict.fromkeys(report.extra))
    return report
