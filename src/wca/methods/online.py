"""What the online (memory) methods share: the stream protocol, the per-image head they start
from (``base=``), their per-dataset defaults and the per-class caches they keep.

Stream protocol: :class:`wca.methods.base.OnlineHead`.

Base. Every online method starts from a per-image head (``base="clip"`` by default): its
zero-shot logits are that head's scores times ``logit_scale`` (a head with its own
``logit_scale`` option is built with it instead), and the memory's key is the head's image
side (``image_features``, e.g. WCA's weighted crop mean), else the full view. A base that
reads crops has already turned the views into one score, so the method sees one view per image;
a base that scores the full view alone (clip, cupl, ...) scores every view (the full view and
the crops) where the method's authors use augmented views.

Ragged crops (``counts``, :mod:`wca.methods.ragged`): a base that reads crops scores each image
on its own crops; a base that scores views one by one gives each image its full view and its
own crops, and a rule that counts views (the int(0.1 V) most confident) counts the image's own
V = 1 + counts[b].
"""

from __future__ import annotations

import functools
import inspect
import math
import operator
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar

from pydantic import AfterValidator, Field

from wca.deferred import torch
from wca.methods.base import Head
from wca.methods.ragged import zero_padding
from wca.methods.registry import (
    METHODS,
    EncodeTexts,
    MethodBuilder,
    PerDataset,
    build_head,
    options_model,
)
from wca.methods.sources import TextSources

if TYPE_CHECKING:
    from torch import Tensor

Views = Literal["full", "confident"]  # one view per image, or the most confident of all views
Shots = Annotated[int, Field(ge=1, le=1000)]
Weight = Annotated[float, Field(ge=0, le=1e6)]
Fraction = Annotated[float, Field(gt=0, le=1)]


def _ordered(bounds: tuple[float, float]) -> tuple[float, float]:
    if bounds[0] > bounds[1]:
        raise ValueError(f"the lower bound {bounds[0]:g} is above the upper {bounds[1]:g}")
    return bounds


# an interval (lower, upper), as TDA's entropy and mask thresholds
Bounds = Annotated[
    tuple[Annotated[float, Field(ge=0)], Annotated[float, Field(ge=0)]], AfterValidator(_ordered)
]

VALUE_BUDGET = 2**23  # values [images, views, classes] per block: bounds a block's memory
MAX_BLOCK = 256  # images per block at most (block matrices are [block, block])

T = TypeVar("T")


# --------------------------------------------------------------------------- the base head


def working_dtype(image_emb: Tensor) -> torch.dtype:
    return torch.promote_types(image_emb.dtype, torch.float32)


@dataclass
class Base:
    """The per-image head an online method starts from (its first text draw)."""

    head: Head
    scale: float = 100.0  # multiplies the head's scores (1 when it applies its own scale)
    text: Tensor | None = None  # [C, D] class vectors, for the methods that keep them

    @property
    def uses_crops(self) -> bool:
        return self.head.uses_crops

    def views(
        self,
        image_emb: Tensor,
        crop_emb: Tensor | None,
        several: bool,
        *,
        counts: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Features ``[B, V, D]`` and zero-shot logits ``[B, V, C]`` of each image's views:
        the full view then the crops when ``several`` (and the base scores one view at a
        time), else one view: the base's image side and its scores. Image b's crops are its
        first ``counts[b]``: a base that reads crops scores its own; views read one by one
        are its first ``view_counts(counts, several)[b]``, the padding after them zeroed."""
        dtype = working_dtype(image_emb)
        image_emb = image_emb.to(dtype)
        crop_emb = None if crop_emb is None else crop_emb.to(dtype)
        if self.head.uses_crops:
            features = self.head.image_features(image_emb, crop_emb, counts=counts).to(dtype)
            logits = self.scale * self.head.logits(image_emb, crop_emb, counts=counts).to(dtype)
            return features[:, None], logits[:, None]
        views = image_emb[:, None]
        if several and crop_emb is not None:
            views = torch.cat([views, zero_padding(crop_emb, counts)], dim=1)
        logits = self.head.logits(views.flatten(0, 1)).to(dtype)
        return views, self.scale * logits.view(*views.shape[:2], -1)

    def view_counts(self, counts: Tensor | None, several: bool) -> Tensor | None:
        """The number of views ``[B]`` :meth:`views` gives each image: its full view and own
        crops (1 + counts) where it reads them one by one; None where all have as many."""
        return None if counts is None or self.head.uses_crops or not several else counts + 1


def build_base(
    method: str,
    base: str,
    encode_texts: EncodeTexts,
    sources: TextSources,
    logit_scale: float,
    with_text: bool = False,
) -> Base:
    """Build per-image method ``base`` for online method ``method`` (with the same texts and
    its own defaults). ``with_text``: also its class vectors (``text_features``), or CLIP's
    label prompts for a base without them (zero, mta, awt)."""
    if base not in METHODS:
        raise ValueError(f"method {method!r}: base: unknown method {base!r}")
    own_scale = "logit_scale" in options_model(base).model_fields
    options = {"logit_scale": logit_scale} if own_scale else {}
    head = build_head(base, encode_texts, sources, allow_duplicate_classes=True, **options)
    if head.online:
        raise ValueError(
            f"method {method!r}: base: {base!r} is an online method; the base scores each "
            "image alone (clip, cupl, wca, ...)"
        )
    text = head.text_features() if with_text else None
    if with_text and text is None:  # zero, mta, awt keep no class vectors: CLIP's prompts
        clip = build_head("clip", encode_texts, sources, allow_duplicate_classes=True)
        text = clip.text_features()
    return Base(head, 1.0 if own_scale else logit_scale, text)


def with_options(builder: MethodBuilder, **fixed) -> MethodBuilder:
    """``builder`` with some options fixed (no longer options): ``tda+wca`` is ``tda`` with
    ``base="wca"``. The registry reads the options from the signature this returns (their
    annotations in ``builder``'s module, which it wraps)."""

    @functools.wraps(builder)
    def build(encode_texts: EncodeTexts, sources: TextSources, **options) -> Head:
        return builder(encode_texts, sources, **fixed, **options)

    signature = inspect.signature(builder)
    parameters = [p for name, p in signature.parameters.items() if name not in fixed]
    build.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    return build


# --------------------------------------------------------------------------- per-dataset defaults

DATASET_ALIASES = {"oxford-pet": "oxford-pets", "place365": "places365"}


def dataset_key(name: str) -> str:
    key = name.lower().replace("_", "-")
    return DATASET_ALIASES.get(key, key)


def for_dataset(table: Mapping[str, T], dataset: str | None) -> T:
    """``table``'s entry for ``dataset`` (our names or the authors'; ``-``/``_`` alike; a
    shard set's last name, ``wds/vtab/dtd``: ``dtd``), ImageNet's for a dataset the authors did
    not tune (or none: the task's name unknown). Which one runs: :func:`tuned_for`."""
    return table[tuned_for(table)(dataset)]


def tuned_for(table: Mapping[str, T], on_texts: str | None = None) -> PerDataset:
    """The datasets of ``table`` (whose values :func:`for_dataset` gives), ImageNet's
    elsewhere, to register a method with (``register_method(name, per_dataset=...)``);
    ``on_texts``: the option whose values ``table`` holds, when it acts on the texts alone."""
    return PerDataset(tuple(table), on_texts={on_texts: dict(table)} if on_texts else {})


# --------------------------------------------------------------------------- shared math


def entropy(logits: Tensor) -> Tensor:
    """Softmax entropy over the last dimension (the authors' ``softmax_entropy``)."""
    return -(logits.softmax(-1) * logits.log_softmax(-1)).sum(-1)


def output_entropy(logits: Tensor) -> Tensor:
    """The same entropy in logsumexp form (BoostAdapter's ``get_output_entropy``): it differs
    from :func:`entropy` in the last bits, which decide between near-certain views."""
    log_p = logits - logits.logsumexp(-1, keepdim=True)
    return -(log_p * log_p.exp()).sum(-1)


def mean_entropy(logits: Tensor) -> Tensor:
    """Entropy of the mean softmax over dimension -2 (the authors' ``avg_entropy``)."""
    log_p = logits.log_softmax(-1)
    mean = log_p.logsumexp(-2) - math.log(logits.shape[-2])
    mean = mean.clamp_min(torch.finfo(mean.dtype).min)
    return -(mean * mean.exp()).sum(-1)


def confident_count(n_views: int, fraction: float = 0.1, at_least: int = 1) -> int:
    """How many of ``n_views`` views are the most confident: ``int(fraction V)``, at least
    ``at_least`` (V being the image's own number of views)."""
    return min(max(int(n_views * fraction), at_least), n_views)


def most_confident(values: Tensor, fraction: float = 0.1, at_least: int = 1) -> Tensor:
    """Indices ``[B, k]`` of the ``int(fraction V)`` (at least ``at_least``) views of lowest
    ``values`` ``[B, V]``, lowest first."""
    count = confident_count(values.shape[1], fraction, at_least)
    return torch.argsort(values, dim=1, stable=True)[:, :count]


def take(values: Tensor, index: Tensor) -> Tensor:
    """``values [B, V, ...]`` at ``index [B, k]``: ``[B, k, ...]``."""
    index = index.view(*index.shape, *[1] * (values.ndim - 2))
    return values.gather(1, index.expand(-1, -1, *values.shape[2:]))


def block_size(values_per_image: int) -> int:
    return max(1, min(MAX_BLOCK, VALUE_BUDGET // max(values_per_image, 1)))


def blocks(step: int, image_emb: Tensor, *more: Tensor | None) -> Iterator[tuple[Any, ...]]:
    """Consecutive blocks of ``step`` images: ``image_emb`` and each of ``more`` (per-image
    values ``[B, ...]``: crops, counts, ...; None stays None) at their rows."""
    for lo in range(0, len(image_emb), step):
        rows = slice(lo, lo + step)
        yield image_emb[rows], *(None if values is None else values[rows] for values in more)


# --------------------------------------------------------------------------- per-class caches


class SlotCache:
    """Per-class caches as the authors keep them (a list per class, in their order), with each
    entry's key in a fixed slot ``class * capacity + k`` so a block of images is scored at once.

    ``policy="lowest"`` keeps the ``capacity`` entries of lowest loss: a full class takes a new
    entry only if its loss is below the worst one's, which it replaces (TDA's ``update_cache``,
    BoostAdapter's with ``fifo=False``, DMN's memory). ``"fifo"`` keeps the newest ``capacity``
    (BoostAdapter's negative cache).
    """

    def __init__(self, n_classes: int, capacity: int, policy: str = "lowest") -> None:
        self.capacity, self.policy = capacity, policy
        self.lists: dict[int, list[tuple[float, int]]] = {}  # class -> [(loss, slot)]
        self.filled = torch.zeros(n_classes * capacity, dtype=torch.bool)
        self.keys: Tensor | None = None  # [slots, D]
        self.values: Tensor | None = None  # [slots, C] where entries carry values

    def insert(self, label: int, loss: float) -> int | None:
        """Add an entry; the slot it takes, or None when the class keeps what it has."""
        entries = self.lists.setdefault(label, [])
        if len(entries) < self.capacity:
            slot = len(entries)
            entries.append((loss, slot))
        elif self.policy == "fifo":
            slot = entries.pop(0)[1]
            entries.append((loss, slot))
        elif loss < entries[-1][0]:
            slot = entries[-1][1]
            entries[-1] = (loss, slot)
        else:
            return None
        if self.policy == "lowest":
            entries.sort(key=operator.itemgetter(0))
        return label * self.capacity + slot

    def block(self, size: int) -> CacheBlock:
        return CacheBlock(self, size)

    def store(self, name: str, rows: Tensor, slots: Tensor, source: Tensor) -> None:
        """Write ``source[rows]`` into the slots ``slots`` of store ``name`` (keys, values)."""
        current = getattr(self, name)
        if current is None:
            current = source.new_zeros(len(self.filled), *source.shape[1:])
            setattr(self, name, current)
        current[slots] = source[rows].to(current.dtype)


class CacheBlock:
    """Where every entry of a cache lives while a block of ``size`` images is inserted: the
    slots' contents at the block's start (``old``), then the block's own entries (``new``,
    entry j from image j). Entry e is in the cache when image i is scored iff
    ``start[e] <= i < end[e]``."""

    def __init__(self, cache: SlotCache, size: int) -> None:
        self.cache, self.size = cache, size
        self.old_end: dict[int, int] = {}  # slot -> image whose entry replaced its content
        self.writer: dict[int, int] = {}  # slot -> the latest block entry written there
        self.slot = [-1] * size  # block entry -> its slot (-1: not admitted)
        self.new_end = [size] * size

    def add(self, image: int, label: int, loss: float) -> None:
        slot = self.cache.insert(label, loss)
        if slot is None:
            return
        if slot in self.writer:
            self.new_end[self.writer[slot]] = image
        else:
            self.old_end[slot] = image
        self.writer[slot] = image
        self.slot[image] = slot

    def entry(self, slot: int) -> int:
        """The column (``old`` slots, then ``new`` entries) holding ``slot``'s entry now."""
        writer = self.writer.get(slot)
        return slot if writer is None else len(self.cache.filled) + writer

    def alive(self, device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
        """Masks ``[size, slots]`` (old contents) and ``[size, size]`` (block entries)."""
        images = torch.arange(self.size)
        old_end = torch.full((len(self.cache.filled),), self.size)
        if self.old_end:
            old_end[list(self.old_end)] = torch.tensor(list(self.old_end.values()))
        old = self.cache.filled[None] & (images[:, None] < old_end[None])
        admitted = torch.tensor(self.slot) >= 0
        new_end = torch.tensor(self.new_end)
        new = admitted[None] & (images[None] <= images[:, None]) & (images[:, None] < new_end)
        return old.to(device), new.to(device)

    def labels(self, device: torch.device | str = "cpu") -> Tensor:
        """The class of each block entry (0 for those not admitted)."""
        return torch.tensor([max(s, 0) // self.cache.capacity for s in self.slot], device=device)

    def commit(self, keys: Tensor | None, values: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Store the block's surviving entries (their keys, and values where entries carry
        them; a method that keeps its own store passes None); the slots written and the
        block entries written there."""
        slots = torch.tensor(list(self.writer), dtype=torch.long)
        rows = torch.tensor(list(self.writer.values()), dtype=torch.long)
        if len(slots):
            if keys is not None:
                self.cache.store("keys", rows, slots, keys)
            if values is not None:
                self.cache.store("values", rows, slots, values)
            self.cache.filled[slots] = True
        return slots, rows


def cache_affinity(
    query: Tensor, old_keys: Tensor | None, new_keys: Tensor, alive: tuple[Tensor, Tensor], beta
) -> tuple[Tensor, Tensor]:
    """TDA's ``exp(-(beta - beta * query . key))`` for every (image, entry) pair, zero where
    the entry is not in the cache at that image: ``[b, slots]`` and ``[b, b]``."""
    old_alive, new_alive = alive
    old = query.new_zeros(old_alive.shape)
    if old_keys is not None:
        old = torch.exp(-(beta - beta * query @ old_keys.T)) * old_alive
    new = torch.exp(-(beta - beta * query @ new_keys.T)) * new_alive
    return old, new


def per_class(old: Tensor, new: Tensor, capacity: int, new_labels: Tensor, classes: int) -> Tensor:
    """Sum of the weights ``old [b, classes * capacity]`` and ``new [b, b]`` by class."""
    total = old.view(len(old), classes, capacity).sum(-1)
    return total.index_add(1, new_labels, new)
