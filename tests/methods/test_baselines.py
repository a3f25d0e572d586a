"""Prompt strings and heads of every method, on a tiny set of the tests' own and on the published
description sets."""

from __future__ import annotations

import hashlib

import pytest
import torch
import torch.nn.functional as F

from wca.descriptions import match_descriptions
from wca.methods import (
    METHODS,
    PromptHead,
    TextSources,
    WCAHead,
    build_head,
    descriptor_sentence,
    encode_prompts,
    load_text_sources,
    waffle_descriptors,
)
from wca.scoring import wca_scores


class HashEncoder:
    """A deterministic stand-in text encoder that records every text it encodes."""

    def __init__(self, dim: int = 16):
        self.dim, self.seen = dim, []

    def __call__(self, texts: list[str]) -> torch.Tensor:
        self.seen.extend(texts)
        seeds = [int(hashlib.sha256(t.encode()).hexdigest()[:8], 16) for t in texts]
        rows = [torch.randn(self.dim, generator=torch.Generator().manual_seed(s)) for s in seeds]
        return F.normalize(torch.stack(rows), dim=-1)


@pytest.fixture(params=["tiny dtd", "cub"])
def sources(request) -> TextSources:
    """A tiny DTD-like set of the tests' own, and the published CUB set (skipped if absent)."""
    if request.param == "tiny dtd":
        return load_text_sources(request.getfixturevalue("tiny_descriptions") / "dtd")
    return load_text_sources(request.getfixturevalue("descriptors_dir") / "cub")


def test_clip_prompt(sources):
    encoder = HashEncoder()
    build_head("clip", encoder, sources)
    assert encoder.seen == [f"a photo of a {c}." for c in sources.classnames]


def test_clip_e_prompts_fill_every_template(sources):
    encoder = HashEncoder()
    build_head("clip-e", encoder, sources)
    expected = [t.format(c) for c in sources.classnames for t in sources.templates]
    assert encoder.seen == expected
    if sources.classnames[0] == "Black-footed Albatross":
        assert encoder.seen[0] == "a photo of a Black-footed Albatross, a type of bird."
    else:
        assert encoder.seen[:2] == ["a photo of a banded texture.", "a photo of a banded pattern."]


@pytest.mark.parametrize(
    "descriptor, sentence",
    [
        ("a long, hooked bill", "which is a long, hooked bill"),
        ("an orange beak", "which is an orange beak"),
        ("angular wings", "which is angular wings"),  # CLIP-D's rule: any leading "a"
        ("has a crest", "which has a crest"),
        ("often found near water", "which often found near water"),
        ("typically brown", "which typically brown"),
        ("may have spots", "which may have spots"),
        ("can fly", "which can fly"),
        ("used for weaving", "which is used for weaving"),
        ("black and white feathers", "which has black and white feathers"),
    ],
)
def test_descriptor_sentence_rule(descriptor, sentence):
    assert descriptor_sentence(descriptor) == sentence


def test_clip_d_prompts_follow_the_wca_code(sources):
    encoder = HashEncoder()
    build_head("clip-d", encoder, sources)
    first = sources.classnames[0]
    expected = [f"{first}, {descriptor_sentence(d)}" for d in sources.descriptors[first]]
    assert encoder.seen[: len(expected)] == expected
    if first == "Black-footed Albatross":
        assert encoder.seen[0] == "Black-footed Albatross, which is a seabird"
    assert not any(text.endswith(".") for text in encoder.seen[: len(expected)])


def test_clip_d_aggregations_differ_only_by_class_norm(sources):
    encoder = HashEncoder()
    by_embedding = build_head("clip-d", encoder, sources)
    by_score = build_head("clip-d", encoder, sources, aggregate="score")
    image = F.normalize(torch.randn(4, 16), dim=-1)
    norms = by_score.class_emb[0].norm(dim=-1)
    torch.testing.assert_close(by_score.logits(image) / norms, by_embedding.logits(image))
    per_descriptor = build_head("clip-d", encoder, sources, aggregate="score", suffix=".")
    assert encoder.seen[-1].endswith(".") and isinstance(per_descriptor, PromptHead)


def test_waffle_prompts_share_one_random_set_across_classes(sources):
    encoder = HashEncoder()
    build_head("waffle", encoder, sources, count=15)
    per_class = len(encoder.seen) // len(sources.classnames)
    assert per_class == 30
    first, second = sources.classnames[:2]
    prompts_first, prompts_second = encoder.seen[:30], encoder.seen[30:60]
    assert all(
        p.startswith(f"A photo of a {first}, which ") and p.endswith(".") for p in prompts_first
    )
    assert [p.replace(first, second) for p in prompts_first] == prompts_second


def test_waffle_words_and_characters_follow_the_class_names(sources):
    names = sources.names("waffle")
    phrases = [d for t in match_descriptions(names, sources.descriptors) for d in t]
    descriptors = waffle_descriptors(names, phrases, sources.words, 15, seed=3)
    words, characters = descriptors[0::2], descriptors[1::2]
    assert len(words) == len(characters) == 15
    allowed = set("".join(phrases).replace(",", "").replace(".", "").replace(" ", ""))
    assert all(set(c.replace(", ", "")) <= allowed for c in characters)
    assert descriptors == waffle_descriptors(names, phrases, sources.words, 15, seed=3)
    assert descriptors != waffle_descriptors(names, phrases, sources.words, 15, seed=4)


def test_waffle_draws_give_one_class_set_each(sources):
    head = build_head("waffle", HashEncoder(), sources, draws=3)
    assert head.n_draws == 3
    image = F.normalize(torch.randn(2, 16), dim=-1)
    assert not torch.allclose(head.logits(image, draw=0), head.logits(image, draw=1))
    torch.testing.assert_close(head.logits(image, draw=3), head.logits(image, draw=0))


def test_cupl_and_wca_use_the_sentences_in_label_order(sources):
    encoder = HashEncoder()
    build_head("cupl", encoder, sources)
    expected = [s.strip() for c in sources.classnames for s in sources.sentences[c]]
    assert encoder.seen == expected
    encoder.seen.clear()
    head = build_head("wca", encoder, sources, image_scale=3.0)
    assert isinstance(head, WCAHead) and head.image_scale == 3.0
    assert encoder.seen[len(expected) :] == [f"a photo of a {c}." for c in sources.classnames]


def test_wca_head_scores_crops_with_the_scoring_module(sources):
    encoder = HashEncoder()
    head = build_head("wca", encoder, sources)
    crops, image = (
        F.normalize(torch.randn(3, 5, 16), dim=-1),
        F.normalize(torch.randn(3, 16), dim=-1),
    )
    expected = wca_scores(crops, image, head.desc_emb, head.label_emb, 4.0, 2.0, head.mask)
    torch.testing.assert_close(head.logits(image, crops), expected)
    with pytest.raises(ValueError, match="crop"):
        head.logits(image)


def test_class_names_follow_label_order_not_file_order(descriptors_dir):
    sources = load_text_sources(descriptors_dir / "oxford_pet")
    assert sources.classnames[0] == "Abyssinian"
    assert list(sources.sentences)[0] == "wheaten terrier"  # the file's own order differs
    encoder = HashEncoder()
    build_head("cupl", encoder, sources)
    assert encoder.seen[0] in sources.sentences["Abyssinian"]


def test_missing_descriptions_are_reported_by_name(descriptors_dir):
    sources = load_text_sources(descriptors_dir / "cub")
    del sources.sentences["Laysan Albatross"]
    with pytest.raises(ValueError, match="'Laysan Albatross'"):
        build_head("wca", HashEncoder(), sources)


def test_duplicate_class_names_need_opting_in():
    sources = TextSources(["tench", "missile", "missile"], templates=["a {}."])
    with pytest.raises(ValueError, match="'missile'"):
        build_head("clip", HashEncoder(), sources)
    assert build_head("clip", HashEncoder(), sources, allow_duplicates=True).class_emb.shape[1] == 3


def test_imagenet_uses_openai_names_for_clip_d_and_waffle(descriptors_dir):
    sources = load_text_sources(descriptors_dir / "imagenet")
    assert sources.names("clip-d") != sources.names("clip")
    assert sources.names("waffle") == sources.names("clip-d")
    assert len(sources.names("clip")) == 1000


def test_unknown_method_option_and_missing_source_are_clear_errors(sources):
    with pytest.raises(ValueError, match="unknown method"):
        build_head("clip-x", HashEncoder(), sources)
    with pytest.raises(ValueError, match="no option temperature"):
        build_head("wca", HashEncoder(), sources, temperature=1.0)
    bare = TextSources(sources.classnames)
    with pytest.raises(ValueError, match="cupl.json"):
        build_head("cupl", HashEncoder(), bare)
    assert set(METHODS) == {"clip", "clip-e", "clip-d", "waffle", "cupl", "wca", "zero", "mta"} | {
        "awt",
        "wca-uniform-crops",
        "wca-uniform-text",
        "wca-full-view",
        "wca-paper",
        "lazsl",
        "tda",
        "tda+wca",
        "dmn",
        "boostadapter",
        "onzeta",
        "bifta",
        "cosmic",
        "cosmic+wca",
        "dota",
        "dota+wca",
        "ecalp",
        "ecalp+wca",
        "bca",
        "bca+wca",
        "oga",
        "oga+wca",
    }


def test_encode_prompts_pads_ragged_lists():
    encoder = HashEncoder()
    emb, mask = encode_prompts(encoder, [["a", "b", "c"], ["d"], ["e", "f"]])
    assert emb.shape == (3, 3, 16)
    assert mask.tolist() == [[True, True, True], [True, False, False], [True, True, False]]
    torch.testing.assert_close(emb[2, 1], encoder(["f"])[0])
    assert torch.all(emb[~mask] == 0)


@pytest.mark.parametrize("form", ["reference", "paper"])
def test_wca_pool_logits_equal_per_run_gathered_logits(sources, form):
    head = build_head("wca", HashEncoder(), sources, form=form)
    pool = F.normalize(torch.randn(3, 10, 16), dim=-1)
    image = F.normalize(torch.randn(3, 16), dim=-1)
    indices = torch.randint(0, 10, (4, 7), generator=torch.Generator().manual_seed(0))
    runs = head.pool_logits(image, pool, indices)
    assert runs.shape == (4, 3, len(sources.classnames))
    for r in range(4):
        torch.testing.assert_close(runs[r], head.logits(image, pool[:, indices[r]]))


def test_wca_head_text_side_is_fixed_at_construction(sources):
    import dataclasses

    head = build_head("wca", HashEncoder(), sources)
    with pytest.raises(dataclasses.FrozenInstanceError):
        head.text_scale = 0.0
    flatter = dataclasses.replace(head, text_scale=0.0)
    assert not torch.allclose(flatter.text, head.text)
