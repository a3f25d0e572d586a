"""Parsing and cleaning of LLM answers into description lists."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from wca.descriptions.clean import (
    clean_descriptions,
    clean_phrase,
    clean_sentence,
    dedupe,
    parse_descriptors,
    parse_sentences,
    remove_near_duplicates,
    split_items,
)

NUMBERED = """Here are some ways to identify an American Robin:

1. **Red-orange breast**: the adult has a bright, rusty breast.
2. Grey-brown back and wings
3) A yellow bill with a dark tip.

Overall, it is a common thrush."""

BULLETED = """- A small bird perched on a branch
* Its head is black
• The tail is long and forked!"""

PARAGRAPH = """The Laysan albatross is a large seabird
   with a wingspan of about 2   meters, a white  head
and dark upper wings."""

CLIPD_ANSWER = """There are several useful visual features to tell there is a lemur in a photo:
- four-limbed primate
- black, grey, white, brown, or red-brown
- wet and hairless nose with curved nostrils.
- long tail"""


def test_numbered_list_with_preamble_becomes_one_sentence_per_item():
    assert parse_sentences(NUMBERED) == [
        "Red-orange breast: the adult has a bright, rusty breast.",
        "Grey-brown back and wings.",
        "A yellow bill with a dark tip.",
    ]


def test_bullets_of_any_kind_are_stripped():
    assert parse_sentences(BULLETED) == [
        "A small bird perched on a branch.",
        "Its head is black.",
        "The tail is long and forked!",
    ]


def test_paragraph_is_one_sentence_with_single_spaces():
    assert parse_sentences(PARAGRAPH) == [
        "The Laysan albatross is a large seabird with a wingspan of about 2 meters, "
        "a white head and dark upper wings."
    ]


@pytest.mark.parametrize("answer", ["", "   ", "\n\n", "-", "1.", "**", '""', "...", None])
def test_empty_answers_give_nothing(answer):
    assert parse_sentences(answer) == []
    assert parse_descriptors(answer) == []


def test_final_punctuation_and_quotes_are_normalised():
    assert clean_sentence('"A caption of a robin"') == "A caption of a robin."
    assert clean_sentence("It is red..") == "It is red."
    assert clean_sentence("Is it a bird?!") == "Is it a bird?"
    assert clean_sentence("It has stripes,") == "It has stripes."
    assert clean_sentence('He said "hello."') == 'He said "hello."'
    assert clean_sentence("The wingspan is 3.5 feet") == "The wingspan is 3.5 feet."


def test_truncated_answer_loses_its_unfinished_tail():
    cut = "A robin is a songbird. It has a red breast and a"
    assert parse_sentences(cut, truncated=True) == ["A robin is a songbird."]
    assert parse_sentences(cut) == ["A robin is a songbird. It has a red breast and a."]
    # nothing complete: the fragment is better than nothing
    assert parse_sentences("A robin with a", truncated=True) == ["A robin with a."]
    listed = "1. Red breast.\n2. Grey back.\n3. Yellow b"
    assert parse_sentences(listed, truncated=True) == ["Red breast.", "Grey back."]


def test_clipd_bullets_become_short_phrases():
    assert parse_descriptors(CLIPD_ANSWER) == [
        "four-limbed primate",
        "black, grey, white, brown, or red-brown",
        "wet and hairless nose with curved nostrils",
        "long tail",
    ]


def test_clipd_paragraph_and_indented_continuations():
    assert parse_descriptors("Features:\nfour-limbed primate; long tail; large eyes.") == [
        "four-limbed primate",
        "long tail",
        "large eyes",
    ]
    wrapped = "1. a long, hooked\n   bill\n2. webbed feet\nThat is all."
    assert parse_descriptors(wrapped) == ["a long, hooked bill", "webbed feet"]
    assert parse_descriptors("- a\n- b\n- c is cut", truncated=True) == ["a", "b"]


def test_split_items_reports_the_shape():
    assert split_items("- a\n- b") == (["a", "b"], True)
    assert split_items("only one line") == (["only one line"], False)
    assert split_items("1. just one item") == (["just one item"], False)


def test_dedupe_ignores_case_spacing_and_final_punctuation():
    texts = ["A red bird.", "a  red bird", "A red bird!", "", "   ", "A blue bird."]
    assert dedupe(texts) == ["A red bird.", "A blue bird."]


# Hand-made embeddings: "feather" is at cosine 0.96 to the first text, "short" at 0.9.
_VECTORS = {
    "a red bird with a long tail": [1.0, 0.0, 0.0],
    "a red bird with a long tail feather": [0.96, 0.28, 0.0],
    "a green frog on a leaf": [0.0, 0.0, 1.0],
    "a red bird with a short tail": [0.9, 0.0, 0.43589],
}


def _encode(texts: list[str]) -> torch.Tensor:
    return torch.tensor([_VECTORS[t] for t in texts]) * 3.0  # not normalised on purpose


def test_near_duplicates_are_removed_by_embedding_similarity():
    texts = list(_VECTORS)
    calls = []

    def encode(batch):
        calls.append(list(batch))
        return _encode(batch)

    assert remove_near_duplicates(texts, encode, threshold=0.94) == [texts[0], texts[2], texts[3]]
    assert remove_near_duplicates(texts, encode, threshold=0.85) == [texts[0], texts[2]]
    assert remove_near_duplicates(texts, encode, threshold=0.99) == texts
    assert len(calls) == 3 and calls[0] == texts  # one batch per call
    kept = remove_near_duplicates(texts, encode, threshold=0.94)
    assert remove_near_duplicates(kept, encode, threshold=0.94) == kept  # idempotent
    with pytest.raises(ValueError, match="threshold"):
        remove_near_duplicates(texts, encode, threshold=0.0)
    with pytest.raises(ValueError, match="rows"):
        remove_near_duplicates(texts, lambda batch: _encode(batch)[:2], threshold=0.9)


def test_clean_descriptions_keeps_class_order():
    data = {"zebra": ["Striped.", "striped", " Black  and white. "], "ant": ["", "Small."]}
    cleaned = clean_descriptions(data)
    assert list(cleaned) == ["zebra", "ant"]
    assert cleaned == {"zebra": ["Striped.", "Black and white."], "ant": ["Small."]}
    near = clean_descriptions({"bird": list(_VECTORS), "frog": []}, _encode, threshold=0.94)
    assert near == {"bird": [t for t in _VECTORS if "feather" not in t], "frog": []}


_line = st.text(alphabet=st.sampled_from("ab .-*1)\t:,!?\"'"), max_size=30)


@settings(max_examples=300, deadline=None)
@given(st.lists(_line, max_size=6), st.booleans())
def test_parsed_texts_are_always_clean(lines, truncated):
    answer = "\n".join(lines)
    for sentence in parse_sentences(answer, truncated):
        assert sentence == sentence.strip() and "  " not in sentence and "\t" not in sentence
        assert sentence[-1] in ".!?\"')" and any(c.isalnum() for c in sentence)
    for phrase in parse_descriptors(answer, truncated):
        assert phrase == clean_phrase(phrase) and phrase


def test_cli_clean(tmp_path, capsys, monkeypatch):
    from wca.cli import describe, main

    data = {
        "owl": ["A round face.", "a round  face", "Big eyes."],
        "bird": [*_VECTORS, "a red bird with a long tail."],
    }
    source, out = tmp_path / "in.json", tmp_path / "out.json"
    source.write_text(json.dumps(data))
    assert main(["descriptions", "clean", str(source), "--output", str(out)]) == 0
    expected = {"owl": ["A round face.", "Big eyes."], "bird": list(_VECTORS)}
    assert json.loads(out.read_text()) == expected
    assert "kept 6 of 8" in capsys.readouterr().err

    loaded = []

    class Encoder:
        def encode_texts(self, texts):
            return _encode(texts)

    def fake_load(spec, device):
        loaded.append((spec, device))
        return Encoder()

    monkeypatch.setattr(describe, "load_text_encoder", fake_load)
    data = {"bird": list(_VECTORS)}
    source.write_text(json.dumps(data))
    args = ["descriptions", "clean", str(source), "--output", str(out), "--near-dup-encoder",
            "open_clip:ViT-B-32/openai", "--near-dup-threshold", "0.94"]
    assert main(args) == 0
    assert loaded == [("open_clip:ViT-B-32/openai", "auto")]
    assert json.loads(out.read_text()) == {"bird": [t for t in _VECTORS if "feather" not in t]}
