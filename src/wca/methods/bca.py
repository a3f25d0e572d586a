"""BCA (Zhou et al., "Bayesian Test-Time Adaptation for Vision-Language Models", CVPR 2025):
class embeddings updated from confident images (the likelihood) and, for each embedding, a
distribution over classes updated from the posteriors (the prior).

The authors' repository (buerzlh/Bayesian-Test-Time-Adaptation-for-Vision-Language-Models)
could not be had here, nor the paper's method section; this follows the algorithm as two public
ports of their ``BCA`` class agree on it (ttabc's ``BCAState``, a federated BCA baseline: the
same names ``mu``, ``cluster_to_class_prob``, ``c1``, ``c2``, ``tem``). Per image, with mu the
class embeddings (the class vectors at first), P the prior (the identity at first):

- its likelihood logits tem x . mu_m, over the full view (``views="full"``), or the mean
  feature x and mean logits of the int(0.1 V) (at least 1) views whose logits have the lowest
  entropy (``"confident"``, TDA's and DOTA's ImageNet-A/V/R/Sketch with 63 AugMix views; V
  the image's own, 1 + counts[b] with ragged crops);
- output: the posterior f = softmax(logits) P (probabilities), before the updates;
- with (p, k) the max and argmax of f: if p > threshold1, mu_k <- normalise((n1_k mu_k + x) /
  (n1_k + 1)), n1_k += 1; if p > threshold2, P_k <- (n2_k P_k + f) / (n2_k + 1), n2_k += 1.

Defaults: threshold1 = threshold2 = 0.3, init_count1 = 30000, init_count2 = 10, the values a
user quotes from the paper for its OOD benchmark (issue 2 of the authors' repository); their
per-dataset values could not be read here, so every dataset takes these. ``tem`` is the
model's ``logit_scale``; the views per dataset are TDA's loaders' (BCA reports on TDA's
benchmarks). ``bca+wca`` is BCA from WCA's weighted crop mean and text side (ours).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

from pydantic import Field

from wca.deferred import F, torch
from wca.methods.base import OnlineHead
from wca.methods.dota import chosen_views
from wca.methods.online import (
    Base,
    Views,
    block_size,
    blocks,
    build_base,
    for_dataset,
    tuned_for,
    with_options,
)
from wca.methods.ragged import check_counts, own
from wca.methods.registry import EncodeTexts, register_method
from wca.methods.sources import TextSources
from wca.methods.tda import TDA_CONFIGS
from wca.methods.zero import LogitScale

if TYPE_CHECKING:
    from torch import Tensor

Threshold = Annotated[float, Field(ge=0, le=1)]
Count = Annotated[float, Field(gt=0, le=1e9)]


@dataclass
class BCAHead(OnlineHead):
    base: Base  # its image side and class vectors
    views: str = "full"
    threshold1: float = 0.3
    init_count1: float = 30000.0
    threshold2: float = 0.3
    init_count2: float = 10.0
    logit_scale: float = 100.0

    @property
    def uses_crops(self) -> bool:
        return self.base.uses_crops or self.views == "confident"

    def probabilities(self, logits: Tensor, logit_scale: float) -> Tensor:
        """The outputs are the posteriors already (rows of P sum to one)."""
        return logits / logits.sum(-1, keepdim=True)

    def stream(self, length: int | None = None) -> BCAStream:
        return BCAStream(self)


class BCAStream:
    """One stream of BCA: the class embeddings ``[C, D]``, the prior ``[C, C]`` and the two
    counts per embedding, carried from call to call."""

    def __init__(self, head: BCAHead) -> None:
        self.head = head
        text = head.base.text
        self.embeddings = text.clone()
        self.prior = torch.eye(len(text), dtype=text.dtype, device=text.device)
        self.counts1 = text.new_full((len(text),), head.init_count1)
        self.counts2 = text.new_full((len(text),), head.init_count2)

    def logits(
        self, image_emb: Tensor, crop_emb: Tensor | None = None, *, counts: Tensor | None = None
    ) -> Tensor:
        counts = check_counts(counts, crop_emb)
        several, base = self.head.views == "confident", self.head.base
        views = 1 + (crop_emb.shape[1] if several and crop_emb is not None else 0)
        step = block_size(views * len(self.prior))
        out = []
        for image, crops, part in blocks(step, image_emb, crop_emb, counts):
            features = base.views(image, crops, several, counts=part)[0]
            out.append(self._block(features, base.view_counts(part, several)))
        return torch.cat(out) if out else image_emb.new_zeros(0, len(self.prior))

    def _block(self, features: Tensor, lengths: Tensor | None) -> Tensor:
        """Posteriors of a block of images whose views are ``features`` (image b's the first
        ``lengths[b]``; all when None), one by one."""
        head = self.head
        for name in ("embeddings", "prior", "counts1", "counts2"):
            setattr(self, name, getattr(self, name).to(features))
        out = features.new_empty(len(features), len(self.prior))
        for image in range(len(features)):
            views = own(features, lengths, image)
            logits = head.logit_scale * views @ self.embeddings.T  # [V, C]
            x, logits = chosen_views(views[None], logits[None], head.views)
            x, logits = x[0].mean(0), logits[0].mean(0)
            posterior = logits.softmax(-1) @ self.prior
            out[image] = posterior
            confidence, label = (value.item() for value in posterior.max(-1))
            if confidence > head.threshold1:
                count = self.counts1[label]
                mean = (count * self.embeddings[label] + x) / (count + 1)
                self.embeddings[label] = F.normalize(mean, dim=0)
                self.counts1[label] += 1
            if confidence > head.threshold2:
                count = self.counts2[label]
                self.prior[label] = (count * self.prior[label] + posterior) / (count + 1)
                self.counts2[label] += 1
        return out


@register_method(
    "bca",
    per_dataset=tuned_for(TDA_CONFIGS),
    summary="BCA (CVPR 2025): class embeddings and their class prior updated online",
)
def _bca(
    encode_texts: EncodeTexts,
    sources: TextSources,
    dataset: str | None = None,
    base: str = "clip",
    views: Views | None = None,
    threshold1: Threshold = 0.3,
    init_count1: Count = 30000.0,
    threshold2: Threshold = 0.3,
    init_count2: Count = 10.0,
    logit_scale: LogitScale = 100.0,
) -> BCAHead:
    """``threshold1``/``init_count1`` gate and weigh the class embeddings' updates,
    ``threshold2``/``init_count2`` the prior's; ``dataset`` picks the views when unset."""
    dataset_views = for_dataset(TDA_CONFIGS, dataset or sources.dataset).views
    return BCAHead(
        build_base("bca", base, encode_texts, sources, logit_scale, with_text=True),
        dataset_views if views is None else views,
        threshold1,
        init_count1,
        threshold2,
        init_count2,
        logit_scale,
    )


register_method(
    "bca+wca",
    per_dataset=tuned_for(TDA_CONFIGS),
    summary="BCA on WCA's scores and weighted crop mean (ours)",
)(with_options(_bca, base="wca"))
