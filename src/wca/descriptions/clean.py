"""Turn raw LLM answers into clean description lists.

LLM answers come in many shapes: a single sentence, a paragraph, a numbered or bulleted list
with a preamble ("Here are some features:"), markdown emphasis, or nothing at all. The parsers
here map each shape onto the published formats: full sentences for CuPL-style sets and short
descriptor phrases for CLIP-D-style sets. ``remove_near_duplicates`` drops descriptions whose
text embeddings are nearly identical to an earlier one (the refinement BiFTA reports helps).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import Tensor

# A list marker at the start of a line: "-", "*", "•", "1.", "2)", "(3)", "a)", "Step 1:".
_ITEM = re.compile(
    r"^\s*(?:[-*•·‣▪◦–—+>]|\(?\d{1,3}[.):\]]|\(?[a-zA-Z]\)|step\s+\d{1,3}[.:)])(?:\s+|$)",
    re.IGNORECASE,
)
_MARKDOWN = re.compile(r"(\*\*|__|`|^#{1,6}\s+)", re.MULTILINE)
_SPACE = re.compile(r"\s+")
_QUOTES = "\"'“”‘’«»"
_SENTENCE_END = re.compile(r"[.!?][\"')\]”’]*(?=\s|$)")
_FINAL_STOP = re.compile(r"[.!?][\"')\]”’]*$")


def split_items(text: str) -> tuple[list[str], bool]:
    """Split an answer into list items, or return it as one paragraph.

    Returns ``(items, is_list)``. An answer with at least two list-marked lines is a list:
    its items lose their markers, indented lines continue the item above, and lines outside
    the list (a preamble, a closing remark) are dropped. Anything else is one paragraph with
    its lines joined (a lone marker is stripped).
    """
    lines = _MARKDOWN.sub("", text or "").splitlines()
    if sum(bool(_ITEM.match(line)) for line in lines) >= 2:
        items: list[str] = []
        in_item = False
        for line in lines:
            if _ITEM.match(line):
                items.append(_ITEM.sub("", line, count=1))
                in_item = True
            elif in_item and line[:1].isspace() and line.strip():
                items[-1] += " " + line.strip()
            else:
                in_item = False
        return items, True
    paragraph = " ".join(_ITEM.sub("", line, count=1) for line in lines)
    return [paragraph], False


def normalize_space(text: str) -> str:
    """Collapse runs of whitespace to one space and strip the ends."""
    return _SPACE.sub(" ", text).strip()


def _strip_quotes(text: str) -> str:
    while len(text) >= 2 and text[0] in _QUOTES and text[-1] in _QUOTES:
        text = text[1:-1].strip()
    return text


def clean_sentence(text: str) -> str:
    """One full sentence: single spaces, no wrapping quotes, one final ``.``/``!``/``?``.

    Returns "" when nothing with a letter or digit is left.
    """
    text = _strip_quotes(normalize_space(_MARKDOWN.sub("", text)))
    text = text.rstrip(" ,;:-–—")
    if not any(ch.isalnum() for ch in text):
        return ""
    text = re.sub(r"([.!?])[.!?]+$", r"\1", text)
    return text if _FINAL_STOP.search(text) else text + "."


def clean_phrase(text: str) -> str:
    """One descriptor phrase: single spaces, no wrapping quotes, no final punctuation."""
    text, previous = normalize_space(_MARKDOWN.sub("", text)), None
    while text != previous:
        previous, text = text, _strip_quotes(text).rstrip(" .,;:!-–—")
    return text if any(ch.isalnum() for ch in text) else ""


def cut_incomplete(text: str) -> str:
    """Drop the unfinished tail of an answer cut off at the token limit.

    Keeps everything up to the last sentence end; a text with no sentence end is kept whole,
    since a fragment is still better than nothing for a class with few answers.
    """
    ends = list(_SENTENCE_END.finditer(text))
    return text[: ends[-1].end()] if ends else text


def parse_sentences(answer: str, truncated: bool = False) -> list[str]:
    """CuPL style: an answer becomes one sentence, or one sentence per list item.

    ``truncated`` (the answer stopped at the token limit) drops an unfinished last sentence,
    or the unfinished last item of a list.
    """
    items, is_list = split_items(answer)
    if truncated:
        items = items[:-1] if is_list and len(items) > 1 else [cut_incomplete(i) for i in items]
    return [s for s in (clean_sentence(item) for item in items) if s]


def parse_descriptors(answer: str, truncated: bool = False) -> list[str]:
    """CLIP-D style: the bullets of an answer become short descriptor phrases.

    A paragraph answer (no list) is split into lines and ``;``-separated parts; lines ending
    in ``:`` (a preamble such as "There are several useful visual features ...:") are dropped.
    ``truncated`` drops the unfinished last item.
    """
    items, is_list = split_items(answer)
    if not is_list:
        lines = [line for line in (answer or "").splitlines() if line.strip()]
        items = [
            part
            for line in lines
            if not line.rstrip().endswith(":")
            for part in _ITEM.sub("", _MARKDOWN.sub("", line), count=1).split(";")
        ]
    if truncated and len(items) > 1:
        items = items[:-1]
    return [p for p in (clean_phrase(item) for item in items) if p]


def dedupe(texts: Iterable[str]) -> list[str]:
    """Drop empty texts and repeats, ignoring case, spacing and final punctuation; keep order."""
    seen: set[str] = set()
    kept: list[str] = []
    for text in texts:
        key = normalize_space(text).casefold().rstrip(" .!?")
        if key and key not in seen:
            seen.add(key)
            kept.append(text)
    return kept


def remove_near_duplicates(
    texts: list[str], encode_texts: Callable[[list[str]], Tensor], threshold: float = 0.95
) -> list[str]:
    """Greedily keep texts whose cosine similarity to every kept text is below ``threshold``.

    ``encode_texts`` maps strings to an embedding matrix (one row per text), e.g. a
    ``wca`` encoder's ``encode_texts``. Earlier texts win, so the result is stable and
    running it twice changes nothing.
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"near-duplicate threshold must be in (0, 1], got {threshold}")
    if len(texts) < 2:
        return list(texts)
    embeddings = encode_texts(list(texts)).float()
    if embeddings.shape[0] != len(texts):
        raise ValueError(f"encode_texts returned {embeddings.shape[0]} rows for {len(texts)} texts")
    embeddings = embeddings / embeddings.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    similarity = embeddings @ embeddings.T
    kept: list[int] = []
    for i in range(len(texts)):
        if not kept or float(similarity[i, kept].max()) < threshold:
            kept.append(i)
    return [texts[i] for i in kept]


def clean_descriptions(
    descriptions: dict[str, list[str]],
    encode_texts: Callable[[list[str]], Tensor] | None = None,
    threshold: float = 0.95,
) -> dict[str, list[str]]:
    """Drop empty and repeated descriptions per class, and near-duplicates if given an encoder.

    Class order and the order of surviving descriptions are kept.
    """
    cleaned: dict[str, list[str]] = {}
    for name, texts in descriptions.items():
        kept = dedupe(normalize_space(t) for t in texts)
        if encode_texts is not None:
            kept = remove_near_duplicates(kept, encode_texts, threshold)
        cleaned[name] = kept
    return cleaned
