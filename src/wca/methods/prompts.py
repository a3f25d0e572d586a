"""The baselines: prompt strings per class and how they become class vectors.

- ``clip``:   "a photo of a {c}."
- ``clip-e``: a template ensemble (CLIP-E): normalised mean of the template embeddings.
- ``clip-d``: "{c}, which (is/has/...) {descriptor}" (CLIP-D, Menon & Vondrick 2023), aggregated
  by mean embedding (the WCA code) or by mean score (the CLIP-D paper).
- ``waffle``: WaffleCLIP's random-word and random-character descriptors (Roth et al. 2023).
- ``cupl``:   the mean embedding of LLM-written sentences (CuPL, Pratt et al. 2023).

Each baseline scores the full view against one class vector per class (per random draw).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Literal

import numpy as np
from pydantic import Field

from wca import defaults
from wca.deferred import torch
from wca.descriptions.io import match_descriptions
from wca.methods.base import Head
from wca.methods.registry import EncodeTexts, register_method, require
from wca.methods.sources import TextSources
from wca.scoring import mean_embedding

if TYPE_CHECKING:
    from torch import Tensor

LABEL_TEMPLATE = defaults.LABEL_TEMPLATE


def clip_prompts(classnames: list[str], template: str = LABEL_TEMPLATE) -> list[list[str]]:
    return [[template.format(name)] for name in classnames]


def template_prompts(classnames: list[str], templates: list[str]) -> list[list[str]]:
    return [[template.format(name) for template in templates] for name in classnames]


def descriptor_sentence(descriptor: str) -> str:
    """CLIP-D's rule for turning a descriptor phrase into a relative clause."""
    if descriptor.startswith("a"):  # also "an" and any word starting with "a", as CLIP-D does
        return f"which is {descriptor}"
    if descriptor.startswith(("has", "often", "typically", "may", "can")):
        return f"which {descriptor}"
    if descriptor.startswith("used"):
        return f"which is {descriptor}"
    return f"which has {descriptor}"


def descriptor_prompts(
    classnames: list[str], descriptors: list[list[str]], prefix: str = "", suffix: str = ""
) -> list[list[str]]:
    """``"{prefix}{c}, which ... {d}{suffix}"`` for every descriptor of every class."""
    return [
        [f"{prefix}{name}, {descriptor_sentence(d)}{suffix}" for d in class_descriptors]
        for name, class_descriptors in zip(classnames, descriptors, strict=True)
    ]


def waffle_descriptors(
    classnames: list[str], descriptors: list[str], words: list[str], count: int, seed: int
) -> list[str]:
    """WaffleCLIP's shared descriptor set: ``count`` pairs of (random words, random characters).

    Word count and length follow the average class name; characters are drawn from those used
    in the real descriptors; character groups mimic the class names' word structure.
    """
    rng = np.random.default_rng(seed)
    name_words = [name.split(" ") for name in classnames]
    n_words = max(round(np.mean([len(w) for w in name_words])), 1)
    word_length = round(np.mean([np.mean([len(x) for x in w]) for w in name_words]))
    vocabulary = [word[:word_length] for word in words]
    tokens = {t.replace(",", "").replace(".", "") for d in descriptors for t in d.split(" ")}
    characters = sorted(set("".join(tokens)))
    n_groups = round(np.mean([name.count(" ") for name in classnames])) + 1
    n_chars = int(np.ceil(np.mean([max(len(x) for x in w) for w in name_words])))
    n_chars += n_groups - n_chars % n_groups
    result = []
    for _ in range(count):
        result.append(" ".join(rng.choice(vocabulary, n_words)))
        groups = ["".join(rng.choice(characters, n_chars // n_groups)) for _ in range(n_groups)]
        result.append(", ".join(groups))
    return result


@dataclass
class PromptHead(Head):
    """A baseline: one class vector per class (per random draw), scored against the full view."""

    class_emb: Tensor  # [K draws, C, D]

    @property
    def n_draws(self) -> int:
        return self.class_emb.shape[0]

    def logits(
        self,
        image_emb: Tensor,
        crop_emb: Tensor | None = None,
        draw: int = 0,
        *,
        counts: Tensor | None = None,
    ) -> Tensor:
        """Scores ``[B, C]`` of the full views (crops, and their ``counts``, are not read), in
        the class vectors' precision or the images' where higher."""
        class_emb = self.class_emb[draw % self.n_draws]
        dtype = torch.promote_types(image_emb.dtype, class_emb.dtype)
        return image_emb.to(dtype) @ class_emb.to(dtype).T

    def text_features(self) -> Tensor:
        """The class vectors ``[C, D]`` (of the first draw): what an online method keeps."""
        return self.class_emb[0]


def encode_prompts(encode_texts: EncodeTexts, prompts: list[list[str]]) -> tuple[Tensor, Tensor]:
    """Encode a ragged list of prompts per class in one call: ``[C, M, D]`` + mask ``[C, M]``."""
    counts = torch.tensor([len(p) for p in prompts])
    flat = encode_texts([text for class_prompts in prompts for text in class_prompts]).float()
    rows = torch.repeat_interleave(torch.arange(len(prompts)), counts)
    starts = torch.repeat_interleave(counts.cumsum(0) - counts, counts)
    columns = torch.arange(len(flat)) - starts
    emb = flat.new_zeros(len(prompts), int(counts.max()), flat.shape[1])
    mask = torch.zeros(emb.shape[:2], dtype=torch.bool)
    emb[rows, columns] = flat
    mask[rows, columns] = True
    return emb, mask


def _prompt_head(encode_texts: EncodeTexts, prompts: list[list[str]], normalize=True) -> PromptHead:
    emb, mask = encode_prompts(encode_texts, prompts)
    return PromptHead(mean_embedding(emb, mask, normalize).unsqueeze(0))


@register_method("clip", summary="CLIP: the prompt \"a photo of a {class}.\"")
def _clip(
    encode_texts: EncodeTexts, sources: TextSources, template: str = LABEL_TEMPLATE
) -> PromptHead:
    """``template``: the prompt, ``{}`` standing for the class name."""
    if template.count("{}") != 1:
        raise ValueError(f"clip: template must hold one {{}} for the class name, got {template!r}")
    return _prompt_head(encode_texts, clip_prompts(sources.names("clip"), template))


@register_method(
    "clip-e",
    summary="CLIP-E: an ensemble of prompt templates (clip-e.json, or the dataset's)",
)
def _clip_e(encode_texts: EncodeTexts, sources: TextSources) -> PromptHead:
    templates = require(sources.templates, "clip-e", "templates (clip-e.json)")
    return _prompt_head(encode_texts, template_prompts(sources.names("clip-e"), templates))


@register_method(
    "clip-d",
    summary="CLIP-D (ICLR 2023): \"{class}, which has {descriptor}\" per descriptor",
)
def _clip_d(
    encode_texts: EncodeTexts,
    sources: TextSources,
    aggregate: Literal["embedding", "score"] = "embedding",
    suffix: str = "",
) -> PromptHead:
    """``aggregate="embedding"`` (WCA code: normalised mean embedding, no final full stop) or
    ``"score"`` (CLIP-D paper: mean of per-descriptor scores; it adds ``suffix="."``)."""
    names = sources.names("clip-d")
    descriptors = require(sources.descriptors, "clip-d", "descriptors (clip-d.json)")
    descriptors = match_descriptions(names, descriptors, sources.origin("descriptors", "clip-d"))
    prompts = descriptor_prompts(names, descriptors, suffix=suffix)
    return _prompt_head(encode_texts, prompts, normalize=aggregate == "embedding")


@register_method(
    "waffle",
    summary="WaffleCLIP (ICCV 2023): random-word and random-character descriptors",
)
def _waffle(
    encode_texts: EncodeTexts,
    sources: TextSources,
    count: Annotated[int, Field(ge=1)] = 15,
    draws: Annotated[int, Field(ge=1)] = 1,
    seed: Annotated[int, Field(ge=0)] = 0,
) -> PromptHead:
    """``draws`` independent descriptor sets (1 in the WCA code, 7 in WaffleCLIP); run ``r`` of
    an evaluation scores with draw ``r % draws``."""
    names = sources.names("waffle")
    words = require(sources.words, "waffle", "a word list (waffle-words.json)")
    descriptors = require(sources.descriptors, "waffle", "descriptors (clip-d.json)")
    matched = match_descriptions(names, descriptors, sources.origin("descriptors", "waffle"))
    phrases = [d for texts in matched for d in texts]
    class_embs = []
    for draw in range(draws):
        shared = waffle_descriptors(names, phrases, words, count, seed + draw)
        prompts = descriptor_prompts(names, [shared] * len(names), "A photo of a ", ".")
        class_embs.append(_prompt_head(encode_texts, prompts).class_emb[0])
    return PromptHead(torch.stack(class_embs))


@register_method(
    "cupl",
    summary="CuPL (ICCV 2023): the mean embedding of LLM-written sentences",
)
def _cupl(encode_texts: EncodeTexts, sources: TextSources) -> PromptHead:
    names = sources.names("cupl")
    sentences = require(sources.sentences, "cupl", "sentences (cupl.json)")
    texts = match_descriptions(names, sentences, sources.origin("sentences", "cupl"))
    return _prompt_head(encode_texts, texts)


# The baselines a peer method (zero, mta) may take its class vectors from.
ClassText = Literal["clip", "clip-e", "cupl"]


def class_vectors(text: str, encode_texts: EncodeTexts, sources: TextSources) -> Tensor:
    """The class vectors ``[C, D]`` of baseline ``text`` (its first draw)."""
    builders = {"clip": _clip, "clip-e": _clip_e, "cupl": _cupl}
    return builders[text](encode_texts, sources).class_emb[0]
