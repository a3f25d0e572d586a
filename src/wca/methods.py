"""The text side of every method: prompt strings per class and how they become class scores.

- ``clip``:   "a photo of a {c}."
- ``clip-e``: a template ensemble (CLIP-E): normalised mean of the template embeddings.
- ``clip-d``: "{c}, which (is/has/...) {descriptor}" (CLIP-D, Menon & Vondrick 2023), aggregated
  by mean embedding (the WCA code) or by mean score (the CLIP-D paper).
- ``waffle``: WaffleCLIP's random-word and random-character descriptors (Roth et al. 2023).
- ``cupl``:   the mean embedding of LLM-written sentences (CuPL, Pratt et al. 2023).
- ``wca``:    the sentences weighted against "a photo of a {c}." and aligned with image crops.

``build_head(name, encode_texts, sources, **options)`` looks the method up in a registry and
returns a head that turns image (and crop) embeddings into ``[B, C]`` scores.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from wca.descriptions.io import (
    duplicate_names,
    load_classnames,
    load_descriptions,
    load_templates,
    load_words,
    match_descriptions,
)
from wca.scoring import description_weights, image_side, mean_embedding, text_side

EncodeTexts = Callable[[list[str]], Tensor]
LABEL_TEMPLATE = "a photo of a {}."


@dataclass
class TextSources:
    """Everything the methods read about the classes of one task.

    ``classnames_for`` overrides the names for one method (ImageNet: the OpenAI names for
    clip-d and waffle, the CuPL names elsewhere).
    """

    classnames: list[str]
    sentences: dict[str, list[str]] | None = None  # CuPL sentences, also WCA's descriptions
    descriptors: dict[str, list[str]] | None = None  # CLIP-D descriptor phrases
    templates: list[str] | None = None  # CLIP-E templates with "{}"
    words: list[str] | None = None  # WaffleCLIP word list
    classnames_for: dict[str, list[str]] = field(default_factory=dict)

    def names(self, method: str) -> list[str]:
        return self.classnames_for.get(method, self.classnames)


def load_text_sources(directory: str | Path, classnames: list[str] | None = None) -> TextSources:
    """Read a descriptions folder laid out like the published sets: ``cupl.json``,
    ``clip-d.json``, ``clip-e.json``, ``classnames*.json``, and ``waffle-words.json`` beside it.

    Class names are ``classnames`` when given, else the folder's ``classnames-cupl.json`` or
    ``classnames.json``; a ``classnames-openai.json`` then serves clip-d and waffle.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: descriptions folder not found")

    def read(name: str, loader: Callable, folder: Path = directory):
        return loader(folder / name) if (folder / name).is_file() else None

    classnames_for = {}
    if classnames is None:
        classnames = read("classnames-cupl.json", load_classnames) or read(
            "classnames.json", load_classnames
        )
        openai_names = read("classnames-openai.json", load_classnames)
        if openai_names:
            classnames_for = {"clip-d": openai_names, "waffle": openai_names}
    if not classnames:
        raise FileNotFoundError(f"{directory}: no classnames.json, and no class names given")
    return TextSources(
        classnames=list(classnames),
        sentences=read("cupl.json", load_descriptions),
        descriptors=read("clip-d.json", load_descriptions),
        templates=read("clip-e.json", load_templates),
        words=read("waffle-words.json", load_words, directory.parent),
        classnames_for=classnames_for,
    )


# ----------------------------------------------------------------------------- prompt strings


def clip_prompts(classnames: list[str]) -> list[list[str]]:
    return [[LABEL_TEMPLATE.format(name)] for name in classnames]


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


# ----------------------------------------------------------------------------- heads


class Head(Protocol):
    """Turns L2-normalised image embeddings ``[B, D]`` (and crops ``[B, N, D]``) into scores."""

    uses_crops: bool
    n_draws: int  # independent random draws of the text side (WaffleCLIP); 1 otherwise

    def logits(
        self, image_emb: Tensor, crop_emb: Tensor | None = None, draw: int = 0
    ) -> Tensor: ...


@dataclass
class PromptHead:
    """A baseline: one class vector per class (per random draw), scored against the full view."""

    class_emb: Tensor  # [K draws, C, D]
    uses_crops: bool = False

    @property
    def n_draws(self) -> int:
        return self.class_emb.shape[0]

    def logits(self, image_emb: Tensor, crop_emb: Tensor | None = None, draw: int = 0) -> Tensor:
        return image_emb.float() @ self.class_emb[draw % self.n_draws].T


@dataclass(frozen=True)
class WCAHead:
    """WCA: crops weighted against the full view, descriptions against the class label.

    Frozen, because the text side sum_j v_j desc_j is computed once at construction (use
    ``dataclasses.replace`` to try other scales).
    """

    desc_emb: Tensor  # [C, M, D], zero padding
    mask: Tensor  # [C, M]
    label_emb: Tensor  # [C, D]
    image_scale: float = 4.0
    text_scale: float = 2.0
    form: str = "reference"
    uses_crops: bool = True
    n_draws: int = 1
    text: Tensor = field(init=False, repr=False)  # [C, D] the text side of every class

    def __post_init__(self) -> None:
        side = text_side(self.desc_emb, self.label_emb, self.text_scale, self.mask, self.form)
        object.__setattr__(self, "text", side)

    def logits(self, image_emb: Tensor, crop_emb: Tensor | None = None, draw: int = 0) -> Tensor:
        if crop_emb is None:
            raise ValueError("wca scores crops: pass crop embeddings [B, N, D]")
        return image_side(crop_emb.float(), image_emb.float(), self.image_scale, self.form) @ (
            self.text.T
        )

    def pool_logits(self, image_emb: Tensor, crop_pool: Tensor, indices: Tensor) -> Tensor:
        """Scores ``[R, B, C]`` of R runs that each draw crops ``indices[r]`` from the pool.

        Run r's image side sum_k w_rk crop[idx_rk] equals sum_j W_rj crop_j, where W_rj adds
        up the weights of the draws of pool crop j: one batched product with the pool instead
        of R gathered copies of the crops.
        """
        crop_pool, image_emb = crop_pool.float(), image_emb.float()
        similarity = torch.einsum("bpd,bd->bp", crop_pool, image_emb)
        weights = torch.softmax(math.exp(self.image_scale) * similarity[:, indices], dim=-1)
        one_hot = F.one_hot(indices, crop_pool.shape[1]).to(weights.dtype)  # [R, K, pool]
        pooled = torch.einsum("brk,rkp->brp", weights, one_hot)
        images = torch.bmm(pooled, crop_pool)  # [B, R, D]
        if self.form == "reference":
            images = F.normalize(images, dim=-1)
        return (images @ self.text.T).transpose(0, 1)

    def description_weights(self) -> Tensor:
        return description_weights(self.desc_emb, self.label_emb, self.text_scale, self.mask)


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


def _require(value, method: str, what: str):
    if value is None:
        raise ValueError(f"method {method!r} needs {what}, which this description source lacks")
    return value


# ----------------------------------------------------------------------------- registry

MethodBuilder = Callable[..., Head]
METHODS: dict[str, MethodBuilder] = {}


def register_method(name: str) -> Callable[[MethodBuilder], MethodBuilder]:
    def decorate(builder: MethodBuilder) -> MethodBuilder:
        METHODS[name] = builder
        return builder

    return decorate


@register_method("clip")
def _clip(encode_texts: EncodeTexts, sources: TextSources) -> Head:
    return _prompt_head(encode_texts, clip_prompts(sources.names("clip")))


@register_method("clip-e")
def _clip_e(encode_texts: EncodeTexts, sources: TextSources) -> Head:
    templates = _require(sources.templates, "clip-e", "templates (clip-e.json)")
    return _prompt_head(encode_texts, template_prompts(sources.names("clip-e"), templates))


@register_method("clip-d")
def _clip_d(
    encode_texts: EncodeTexts,
    sources: TextSources,
    aggregate: str = "embedding",
    suffix: str = "",
) -> Head:
    """``aggregate="embedding"`` (WCA code: normalised mean embedding, no final full stop) or
    ``"score"`` (CLIP-D paper: mean of per-descriptor scores; it adds ``suffix="."``)."""
    if aggregate not in ("embedding", "score"):
        raise ValueError(f"clip-d aggregate must be 'embedding' or 'score', got {aggregate!r}")
    names = sources.names("clip-d")
    descriptors = _require(sources.descriptors, "clip-d", "descriptors (clip-d.json)")
    descriptors = match_descriptions(names, descriptors, "clip-d descriptors")
    prompts = descriptor_prompts(names, descriptors, suffix=suffix)
    return _prompt_head(encode_texts, prompts, normalize=aggregate == "embedding")


@register_method("waffle")
def _waffle(
    encode_texts: EncodeTexts, sources: TextSources, count: int = 15, draws: int = 1, seed: int = 0
) -> Head:
    """``draws`` independent descriptor sets (1 in the WCA code, 7 in WaffleCLIP); run ``r`` of
    an evaluation scores with draw ``r % draws``."""
    names = sources.names("waffle")
    words = _require(sources.words, "waffle", "a word list (waffle-words.json)")
    descriptors = _require(sources.descriptors, "waffle", "descriptors (clip-d.json)")
    phrases = [d for texts in match_descriptions(names, descriptors, "waffle") for d in texts]
    class_embs = []
    for draw in range(draws):
        shared = waffle_descriptors(names, phrases, words, count, seed + draw)
        prompts = descriptor_prompts(names, [shared] * len(names), "A photo of a ", ".")
        class_embs.append(_prompt_head(encode_texts, prompts).class_emb[0])
    return PromptHead(torch.stack(class_embs))


@register_method("cupl")
def _cupl(encode_texts: EncodeTexts, sources: TextSources) -> Head:
    names = sources.names("cupl")
    sentences = _require(sources.sentences, "cupl", "sentences (cupl.json)")
    return _prompt_head(encode_texts, match_descriptions(names, sentences, "cupl sentences"))


@register_method("wca")
def _wca(
    encode_texts: EncodeTexts,
    sources: TextSources,
    image_scale: float = 4.0,
    text_scale: float = 2.0,
    form: str = "reference",
) -> Head:
    names = sources.names("wca")
    sentences = _require(sources.sentences, "wca", "sentences (cupl.json)")
    desc_emb, mask = encode_prompts(encode_texts, match_descriptions(names, sentences, "wca"))
    label_emb = encode_texts([LABEL_TEMPLATE.format(name) for name in names]).float()
    return WCAHead(desc_emb, mask, label_emb, image_scale, text_scale, form)


def build_head(
    method: str,
    encode_texts: EncodeTexts,
    sources: TextSources,
    allow_duplicates: bool = False,
    **options,
) -> Head:
    """Build the text side of ``method`` (a name in :data:`METHODS`) for the given classes.

    Duplicate class names are an error unless ``allow_duplicates`` (such classes can never be
    told apart: the published ImageNet names have "missile" and "sunglasses" twice).
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    duplicates = duplicate_names(sources.names(method))
    if duplicates and not allow_duplicates:
        raise ValueError(
            f"duplicate class names for {method}: {', '.join(map(repr, duplicates))} "
            "(allow them explicitly with allow_duplicates / --allow-duplicate-classes)"
        )
    builder = METHODS[method]
    accepted = set(inspect.signature(builder).parameters) - {"encode_texts", "sources"}
    unknown = set(options) - accepted
    if unknown:
        raise ValueError(
            f"method {method!r} has no option {', '.join(sorted(unknown))}; "
            f"it takes {', '.join(sorted(accepted)) or 'none'}"
        )
    return builder(encode_texts, sources, **options)
