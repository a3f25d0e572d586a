"""TDA (Karmanov et al., "Efficient Test-Time Adaptation of Vision-Language Models", CVPR 2024):
a positive and a negative key-value cache built over the stream, as the authors'
``run_test_tda`` (kdiAAA/TDA ``tda_runner.py`` and ``utils.py``), batched over blocks of images.

Per image, from its views' zero-shot logits (the base's, at ``logit_scale``):

- its key, logits, loss and pseudo-label: the full view's feature, logits, softmax entropy and
  argmax (``views="full"``: the authors read ImageNet and the fine-grained sets as one image),
  or the mean feature and mean logits of the int(0.1 V) (at least 1) lowest-entropy views, the
  entropy of their mean probabilities and the argmax of their mean logits
  (``views="confident"``: ImageNet-A/V/R/Sketch, read with 63 augmented views + the image);
- the positive cache keeps per class the ``pos_shots`` entries of lowest loss; the negative
  cache does the same with ``neg_shots`` entries for the images whose loss / log2(C) lies
  strictly inside ``neg_entropy``, each valued by its probabilities masked to ``neg_mask``
  (1 inside the open interval, 0 outside);
- the caches take the image first, then it is scored: zero-shot logits
  + pos_alpha sum_pos exp(-(pos_beta - pos_beta key.q)) onehot(class)
  - neg_alpha sum_neg exp(-(neg_beta - neg_beta key.q)) mask.

The per-dataset values are the authors' configs (``configs/*.yaml``), ImageNet's for any other
dataset. ``logit_scale`` is the model's (``build_head`` gives the encoder's; result files record
``"model"``): the authors hard-code 100, OpenAI CLIP's, so the two agree on the models they ran,
and ``logit_scale=100`` keeps their constant on any other. ``tda+wca`` is TDA with
``base="wca"``: WCA's scores as the zero-shot logits and its weighted crop mean as the key
(ours, not from a paper).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, NamedTuple

from wca.deferred import torch
from wca.methods.base import OnlineHead
from wca.methods.online import (
    Base,
    Bounds,
    Shots,
    SlotCache,
    Views,
    Weight,
    block_size,
    blocks,
    build_base,
    cache_affinity,
    entropy,
    for_dataset,
    mean_entropy,
    most_confident,
    per_class,
    take,
    tuned_for,
    with_options,
)
from wca.methods.ragged import by_length, check_counts
from wca.methods.registry import EncodeTexts, register_method
from wca.methods.sources import TextSources
from wca.methods.zero import LogitScale

if TYPE_CHECKING:
    from torch import Tensor


class CacheConfig(NamedTuple):
    """The positive cache of one dataset in TDA's configs (shared by BoostAdapter's, whose
    values are identical), and how the authors read that dataset."""

    alpha: float
    beta: float
    views: str


# kdiAAA/TDA configs/*.yaml by our dataset names (and the authors' other datasets)
TDA_CONFIGS = {
    "imagenet": CacheConfig(2.0, 5.0, "full"),
    "imagenet-a": CacheConfig(2.0, 5.0, "confident"),
    "imagenetv2": CacheConfig(1.0, 8.0, "confident"),
    "imagenet-r": CacheConfig(1.0, 8.0, "confident"),
    "imagenet-sketch": CacheConfig(2.363, 7.45, "confident"),
    "caltech101": CacheConfig(5.0, 5.0, "full"),
    "dtd": CacheConfig(2.0, 3.0, "full"),
    "eurosat": CacheConfig(4.0, 8.0, "full"),
    "fgvc": CacheConfig(2.0, 2.0, "full"),
    "food101": CacheConfig(1.0, 1.0, "full"),
    "oxford-flowers": CacheConfig(1.0, 5.0, "full"),
    "oxford-pets": CacheConfig(2.0, 7.0, "full"),
    "stanford-cars": CacheConfig(1.0, 7.0, "full"),
    "sun397": CacheConfig(2.0, 3.0, "full"),
    "ucf101": CacheConfig(3.0, 8.0, "full"),
}


def image_stats(features: Tensor, logits: Tensor, views: str) -> tuple[Tensor, ...]:
    """Key ``[B, D]``, logits ``[B, C]``, loss ``[B]``, probabilities ``[B, C]`` and
    pseudo-label ``[B]`` of each image from its views (the authors' ``get_clip_logits``)."""
    if views == "full":
        key, logits = features[:, 0], logits[:, 0]
        return key, logits, entropy(logits), logits.softmax(-1), logits.argmax(-1)
    chosen = most_confident(entropy(logits))
    output = take(logits, chosen)
    mean = output.mean(1)
    key = take(features, chosen).mean(1)
    return key, mean, mean_entropy(output), output.softmax(-1).mean(1), mean.argmax(-1)


@dataclass
class TDAHead(OnlineHead):
    base: Base
    views: str = "full"
    pos_shots: int = 3
    pos_alpha: float = 2.0
    pos_beta: float = 5.0
    neg_shots: int = 2
    neg_alpha: float = 0.117
    neg_beta: float = 1.0
    neg_entropy: tuple[float, float] = (0.2, 0.5)
    neg_mask: tuple[float, float] = (0.03, 1.0)

    neg_policy = "lowest"

    @property
    def uses_crops(self) -> bool:
        return self.base.uses_crops or self.views == "confident"

    def stream(self, length: int | None = None) -> TDAStream:
        return TDAStream(self)


class TDAStream:
    """One stream of TDA: its two caches, carried from call to call."""

    several_views = False  # BoostAdapter reads every view for its boosting samples

    def __init__(self, head: TDAHead) -> None:
        self.head = head
        self.pos: SlotCache | None = None
        self.neg: SlotCache | None = None
        self.classes = 0

    def start(self, classes: int) -> None:
        self.classes = classes
        self.pos = SlotCache(classes, self.head.pos_shots)
        self.neg = SlotCache(classes, self.head.neg_shots, self.head.neg_policy)

    def logits(
        self, image_emb: Tensor, crop_emb: Tensor | None = None, *, counts: Tensor | None = None
    ) -> Tensor:
        counts = check_counts(counts, crop_emb)
        several, base = self.several_views or self.head.views == "confident", self.head.base
        if self.pos is None:  # the number of classes, from the first image's scores
            crops, first = (None if x is None else x[:1] for x in (crop_emb, counts))
            self.start(base.views(image_emb[:1], crops, False, counts=first)[1].shape[-1])
        n_views = 1 + (crop_emb.shape[1] if several and crop_emb is not None else 0)
        step = block_size(n_views * self.classes)
        out = []
        for image, crops, part in blocks(step, image_emb, crop_emb, counts):
            features, logits = base.views(image, crops, several, counts=part)
            out.append(self._block(features, logits, base.view_counts(part, several)))
        return torch.cat(out) if out else image_emb.new_zeros(0, self.classes)

    def _block(self, features: Tensor, logits: Tensor, lengths: Tensor | None) -> Tensor:
        """Scores of a block of images whose views are ``features``, ``logits`` (image b's the
        first ``lengths[b]``; all when None)."""
        head = self.head
        stats = by_length(partial(image_stats, views=head.views), lengths, features, logits)
        key, zero_shot, loss, probabilities, label = stats
        size, classes = zero_shot.shape
        self.prepare(features, logits, key, lengths)
        labels, losses = label.tolist(), loss.tolist()
        ratios = (loss / math.log2(classes)).tolist()
        low, high = head.neg_entropy
        pos, neg = self.pos.block(size), self.neg.block(size)
        for image in range(size):
            pos.add(image, labels[image], losses[image])
            self.after_insert(image, pos)
            if low < ratios[image] < high:
                neg.add(image, labels[image], losses[image])
        alive = tuple(mask.to(key.device) for mask in self.evict(pos.alive()))
        old, new = cache_affinity(key, self.pos.keys, key, alive, head.pos_beta)
        positive = per_class(old, new, head.pos_shots, pos.labels(key.device), classes)
        positive = positive + self.boosted()
        mask = (probabilities > head.neg_mask[0]) & (probabilities < head.neg_mask[1])
        mask = mask.to(key.dtype)
        old, new = cache_affinity(key, self.neg.keys, key, neg.alive(key.device), head.neg_beta)
        negative = new @ mask
        if self.neg.values is not None:
            negative = negative + old @ self.neg.values
        pos.commit(key)
        neg.commit(key, mask)
        return zero_shot + head.pos_alpha * positive - head.neg_alpha * negative

    # BoostAdapter's additions; TDA has none
    def prepare(
        self, features: Tensor, logits: Tensor, key: Tensor, lengths: Tensor | None
    ) -> None:
        pass

    def after_insert(self, image: int, pos) -> None:
        pass

    def evict(self, alive: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        return alive

    def boosted(self) -> Tensor | float:
        return 0.0


def dataset_cache(dataset: str | None, alpha: float | None, beta: float | None, views: str | None):
    config = for_dataset(TDA_CONFIGS, dataset)
    return (
        config.alpha if alpha is None else alpha,
        config.beta if beta is None else beta,
        config.views if views is None else views,
    )


@register_method(
    "tda",
    per_dataset=tuned_for(TDA_CONFIGS),
    summary="TDA (CVPR 2024): a positive and a negative cache of confident test images",
)
def _tda(
    encode_texts: EncodeTexts,
    sources: TextSources,
    dataset: str | None = None,
    base: str = "clip",
    views: Views | None = None,
    pos_shots: Shots = 3,
    pos_alpha: Weight | None = None,
    pos_beta: Weight | None = None,
    neg_shots: Shots = 2,
    neg_alpha: Weight = 0.117,
    neg_beta: Weight = 1.0,
    neg_entropy: Bounds = (0.2, 0.5),
    neg_mask: Bounds = (0.03, 1.0),
    logit_scale: LogitScale = 100.0,
) -> TDAHead:
    """``dataset`` picks the authors' config (pos_alpha, pos_beta, views) for options left
    unset; ``base`` the per-image method whose scores and image side TDA starts from."""
    alpha, beta, views = dataset_cache(dataset or sources.dataset, pos_alpha, pos_beta, views)
    return TDAHead(
        build_base("tda", base, encode_texts, sources, logit_scale),
        views,
        pos_shots,
        alpha,
        beta,
        neg_shots,
        neg_alpha,
        neg_beta,
        tuple(neg_entropy),
        tuple(neg_mask),
    )


register_method(
    "tda+wca",
    per_dataset=tuned_for(TDA_CONFIGS),
    summary="TDA on WCA's scores and weighted crop mean (ours)",
)(with_options(_tda, base="wca"))
