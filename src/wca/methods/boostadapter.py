"""BoostAdapter (Zhang et al., "BoostAdapter: Improving Vision-Language Test-Time Adaptation via
Regional Bootstrapping", NeurIPS 2024): TDA's caches plus, for each image, its own most
confident views as boosting samples, as the authors' ``run_test_tda`` in ``mode="boostadapter"``
(taolinzhang/BoostAdapter ``runner.py`` and ``utils.py``), batched over blocks of images.

Differences from :mod:`wca.methods.tda`, all the authors':

- the image's key, logits, loss and pseudo-label come from the full view (their
  ``infer_ori_image``, the fine-grained sets) or from the most confident views (``views=
  "confident"``, ImageNet-A/V/R/Sketch), as TDA's;
- boosting samples: the int(0.1 V) lowest-entropy views of all V views (none below 10 views,
  as their one-view ImageNet; V the image's own, 1 + counts[b] with ragged crops); the image
  is scored with a copy of the positive cache into which each sample, in entropy order, is
  inserted with its own pseudo-label, entropy (their ``get_output_entropy``, the logsumexp
  form) and feature, at a capacity of ``pos_shots +
  delta`` per class (it may push out entries of that copy); the copy is dropped after the
  image;
- the negative cache keeps the newest ``neg_shots`` entries per class (their ``update_cache``
  default ``fifo=True``), not the lowest-loss ones.

Per-dataset values and ``logit_scale`` (the model's): TDA's (their configs repeat them), and
``delta`` from their configs; ImageNet's ``delta`` (absent from their ``imagenet.yaml``, whose
ImageNet has one view) is TTA-VLM's 1.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

from pydantic import Field

from wca.deferred import torch
from wca.methods.online import (
    Bounds,
    CacheBlock,
    Shots,
    Views,
    Weight,
    build_base,
    confident_count,
    entropy,
    for_dataset,
    output_entropy,
    take,
    tuned_for,
)
from wca.methods.registry import EncodeTexts, register_method
from wca.methods.sources import TextSources
from wca.methods.tda import TDAHead, TDAStream, dataset_cache
from wca.methods.zero import LogitScale

if TYPE_CHECKING:
    from torch import Tensor

# taolinzhang/BoostAdapter configs/*.yaml ``delta`` by dataset (imagenet: TTA-VLM's)
DELTAS = {
    "imagenet": 1,
    "imagenet-a": 3,
    "imagenetv2": 1,
    "imagenet-r": 3,
    "imagenet-sketch": 1,
    "caltech101": 2,
    "dtd": 0,
    "eurosat": 0,
    "fgvc": 2,
    "food101": 3,
    "oxford-flowers": 0,
    "oxford-pets": 0,
    "stanford-cars": 3,
    "sun397": 1,
    "ucf101": 0,
}


@dataclass
class BoostAdapterHead(TDAHead):
    delta: int = 1

    neg_policy = "fifo"

    @property
    def uses_crops(self) -> bool:
        return True  # the boosting samples are views

    def stream(self, length: int | None = None) -> BoostStream:
        return BoostStream(self)


class BoostStream(TDAStream):
    """One stream of BoostAdapter: TDA's, with each image's boosting samples."""

    several_views = True

    def prepare(
        self, features: Tensor, logits: Tensor, key: Tensor, lengths: Tensor | None
    ) -> None:
        """Each image's boosting samples: the int(0.1 V) views of lowest softmax entropy, V its
        own number of views (``lengths``; its padding views sort last and are never taken),
        each carrying its entropy in the logsumexp form as its loss (the authors'
        ``select_confident_samples`` then ``get_output_entropy``)."""
        view_entropy = entropy(logits)
        n_views = [logits.shape[1]] * len(logits) if lengths is None else lengths.tolist()
        counts = [confident_count(n, 0.1, at_least=0) for n in n_views]
        if lengths is not None:
            padding = torch.arange(logits.shape[1], device=lengths.device) >= lengths[:, None]
            view_entropy = view_entropy.masked_fill(padding.to(logits.device), torch.inf)
        chosen = torch.argsort(view_entropy, dim=1, stable=True)[:, : max(counts, default=0)]
        self.key = key
        self.boost_features = take(features, chosen)
        self.boost_labels = take(logits, chosen).argmax(-1)
        labels = self.boost_labels.tolist()
        losses = take(output_entropy(logits), chosen).tolist()
        self.boost_label_lists = [row[:k] for row, k in zip(labels, counts, strict=True)]
        self.boost_losses = [row[:k] for row, k in zip(losses, counts, strict=True)]
        self.survives = torch.zeros(chosen.shape, dtype=torch.bool)  # filled on the CPU
        self.evicted: list[tuple[int, int]] = []

    def after_insert(self, image: int, pos: CacheBlock) -> None:
        """Insert the image's boosting samples into a copy of the positive cache, as the
        authors' loop of ``update_cache(cur_pos_cache, ..., fifo=False)``: which samples
        stay, and which cache entries the copy lost."""
        capacity = self.head.pos_shots + self.head.delta
        shots, lists = self.head.pos_shots, pos.cache.lists
        copies: dict[int, list[tuple[float, tuple[str, int]]]] = {}
        labels = self.boost_label_lists[image]
        for sample, (label, loss) in enumerate(zip(labels, self.boost_losses[image], strict=True)):
            item = (loss, ("boost", sample))
            if label not in copies and label not in lists:
                copies[label] = [item]
                continue
            if label not in copies:
                copies[label] = [(lo, ("slot", label * shots + s)) for lo, s in lists[label]]
            entries = copies[label]
            entries.append(item)
            entries.sort(key=operator.itemgetter(0))
            del entries[capacity:]
        for label, entries in copies.items():
            kept = {ref for _, ref in entries}
            for _, slot in lists.get(label, []):
                if ("slot", label * shots + slot) not in kept:
                    self.evicted.append((image, pos.entry(label * shots + slot)))
            for kind, index in kept:
                if kind == "boost":
                    self.survives[image, index] = True

    def evict(self, alive: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        old, new = alive[0].clone(), alive[1].clone()
        slots = old.shape[1]
        for image, column in self.evicted:
            if column < slots:
                old[image, column] = False
            else:
                new[image, column - slots] = False
        return old, new

    def boosted(self) -> Tensor:
        beta = self.head.pos_beta
        affinity = torch.einsum("bd,bkd->bk", self.key, self.boost_features)
        weights = torch.exp(-(beta - beta * affinity)) * self.survives.to(affinity.device)
        total = self.key.new_zeros(len(self.key), self.classes)
        return total.scatter_add(1, self.boost_labels, weights)


@register_method(
    "boostadapter",
    per_dataset=tuned_for(DELTAS),
    summary="BoostAdapter (NeurIPS 2024): TDA's caches with boosting samples",
)
def _boostadapter(
    encode_texts: EncodeTexts,
    sources: TextSources,
    dataset: str | None = None,
    base: str = "clip",
    views: Views | None = None,
    delta: Annotated[int, Field(ge=0, le=1000)] | None = None,
    pos_shots: Shots = 3,
    pos_alpha: Weight | None = None,
    pos_beta: Weight | None = None,
    neg_shots: Shots = 2,
    neg_alpha: Weight = 0.117,
    neg_beta: Weight = 1.0,
    neg_entropy: Bounds = (0.2, 0.5),
    neg_mask: Bounds = (0.03, 1.0),
    logit_scale: LogitScale = 100.0,
) -> BoostAdapterHead:
    """``dataset`` picks the authors' config (pos_alpha, pos_beta, views, delta) for options
    left unset; ``delta`` extra shots per class for the boosting samples."""
    alpha, beta, views = dataset_cache(dataset or sources.dataset, pos_alpha, pos_beta, views)
    return BoostAdapterHead(
        build_base("boostadapter", base, encode_texts, sources, logit_scale),
        views,
        pos_shots,
        alpha,
        beta,
        neg_shots,
        neg_alpha,
        neg_beta,
        tuple(neg_entropy),
        tuple(neg_mask),
        for_dataset(DELTAS, dataset or sources.dataset) if delta is None else delta,
    )
