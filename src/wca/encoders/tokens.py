"""Texts longer than a model's text context, and notices about large description files.

A CLIP-style text tower reads at most its context (77 tokens for CLIP) and the tokenizer cuts
longer texts silently, so descriptions that differ only after the cut become identical. A
:class:`TokenLimit` is a tokenizer's count and its context: an encoder's own
(:func:`encoder_limit`) or CLIP's BPE (:func:`clip_bpe_limit`, open_clip's ``SimpleTokenizer``,
available offline). :func:`check_texts` is what the pipeline calls once per descriptions file.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("wca")
LARGE_FILE = 100_000  # sentences in one file above which encoding them gets a notice
SHOWN_CHARACTERS = 60
_checked: set[tuple[str, str]] = set()  # (model identity, source) already reported


@dataclass(frozen=True)
class TokenLimit:
    """A tokenizer's ``count`` (texts -> tokens each before truncation, specials included;
    ``None`` when it cannot count) and the ``context`` it keeps, named for messages."""

    name: str
    context: int
    count: Callable[[list[str]], list[int] | None]


@dataclass
class LongText:
    """A text longer than the context: the class it describes (``None`` if unknown), the text
    and its token count."""

    label: str | None
    text: str
    tokens: int

    def shown(self) -> str:
        """``label: 'text...' (N tokens)`` on one line, the text shortened."""
        text = " ".join(self.text.split())
        if len(text) > SHOWN_CHARACTERS:
            text = text[: SHOWN_CHARACTERS - 3] + "..."
        prefix = f"{self.label}: " if self.label is not None else ""
        return f"{prefix}{text!r} ({self.tokens} tokens)"


@dataclass
class TextCheck:
    """What :func:`check_texts` found in one file: how many texts, the context (``None`` when
    the encoder cannot count tokens) and the texts longer than it, in file order."""

    n_texts: int
    context: int | None = None
    long: list[LongText] = field(default_factory=list)


def clip_bpe_limit(context: int = 77) -> TokenLimit:
    """CLIP's BPE tokenizer (open_clip's ``SimpleTokenizer``) and CLIP's 77-token context."""
    from open_clip.tokenizer import SimpleTokenizer

    tokenizer = SimpleTokenizer(context_length=context)
    return TokenLimit(
        "CLIP's BPE", context, lambda texts: [len(tokenizer.encode(t)) + 2 for t in texts]
    )


def encoder_limit(encoder) -> TokenLimit | None:
    """The encoder's own tokenizer (:meth:`~wca.encoders.Encoder.token_counts`) and context,
    or ``None`` when its context is unknown."""
    context = getattr(encoder, "context_length", None)
    counter = getattr(encoder, "token_counts", None)
    if context is None or counter is None:
        return None
    return TokenLimit(f"{encoder.name}'s tokenizer", int(context), counter)


def long_texts(
    texts: Mapping[str, Sequence[str]] | Sequence[str], limit: TokenLimit
) -> list[LongText] | None:
    """The texts longer than ``limit.context``, in order (``None`` when the tokenizer cannot
    count); ``texts`` is a list or a mapping {class: [text, ...]}, whose classes are named."""
    pairs = _labelled(texts)
    counts = limit.count([text for _, text in pairs])
    if counts is None:
        return None
    return [
        LongText(label, text, count)
        for (label, text), count in zip(pairs, counts, strict=True)
        if count > limit.context
    ]


def check_texts(
    encoder, texts: Mapping[str, Sequence[str]] | Sequence[str], source: str | Path
) -> TextCheck:
    """Report once per (model, file), through the ``wca`` logger: a notice when ``source``
    holds more than :data:`LARGE_FILE` sentences, and a warning with the count and the first
    offender when some are longer than the encoder's text context (they are cut when encoded).

    Call it with a descriptions file's texts before encoding them: the token counts are kept
    with the encoder's text cache, so a later run reads them from disk. Encoders that cannot
    count tokens (no ``token_counts`` / ``context_length``) get the notice only.
    """
    pairs = _labelled(texts)
    result = TextCheck(n_texts=len(pairs))
    key = (str(getattr(encoder, "identity", id(encoder))), str(source))
    first_time = key not in _checked
    _checked.add(key)
    if first_time and len(pairs) > LARGE_FILE:
        log.info(
            "%s: %s sentences; encoding them takes a while the first time (their embeddings "
            "are cached for the next run)",
            source,
            f"{len(pairs):,}",
        )
    limit = encoder_limit(encoder)
    found = None if limit is None else long_texts(texts, limit)
    if found is None:
        return result
    result.context, result.long = limit.context, found
    if first_time and result.long:
        log.warning(
            "%s: %d of %d descriptions are longer than the %d-token text context of %s and "
            "are cut when encoded; the first: %s (`wca descriptions check` lists them)",
            source, len(result.long), len(pairs), limit.context, encoder.name,
            result.long[0].shown(),
        )  # fmt: skip
    return result


def _labelled(texts: Mapping[str, Sequence[str]] | Sequence[str]) -> list[tuple[str | None, str]]:
    if isinstance(texts, str):
        raise TypeError("expected a list of texts or a {class: [text, ...]} mapping, not a string")
    if isinstance(texts, Mapping):
        return [(label, text) for label, values in texts.items() for text in values]
    return [(None, text) for text in texts]
