"""OGA (Fuchs et al., "Online Gaussian Adaptation of Vision-Language Models", arXiv
2501.04352): Gaussian class likelihoods with one shared covariance, estimated from a memory of
confident images, and the zero-shot probabilities as the prior, with fixed hyper-parameters,
as the authors' ``GaussAdapt`` (cfuchs2023/OGA ``OGA/OGA_core.py``) driven by ``runner.py``.

Per image x, with zero-shot logits z (the base's, at ``logit_scale``):

- memory: per class at most ``shot_capacity`` images; the image enters the class of argmax z
  when its entropy -sum p log(p + 1e-9) (p = softmax z) is below the highest there (an empty
  slot holds log C), replacing that one; the image enters before it is scored;
- means: mu_c = (sum of its stored images) / shot_capacity once class c holds two or more
  (the text's class vector before), as their ``torch.mean`` over all slots of
  ``memory_state * memory``;
- covariance, once some class holds three or more: M the covariance of the n stored images'
  deviations from their class means; Lambda = d ((n - 1) M + tr(M) I)^+ while n <= 4 d, M^+
  beyond (their default ``RidgeMoorePenrose``); d I before;
- output: the log of their MAP estimate softmax(z) softmax(tau log N(x; mu_c, Lambda^-1)),
  normalised: log-probabilities whose softmax is theirs (the x Lambda x term of the
  log-likelihoods, the same for every class, cancels).

The authors' runner updates the memory on a batch of 32 images and then scores the batch;
here each image is its own batch (the stream contract: an image is scored when it arrives).
Their memory is float16; it is kept in the working precision here, and the covariance's
running sums in float64 (each update is O(d^2) instead of a pass over the memory); the
pseudo-inverse is taken in the working precision, as theirs in float32. OGA's point is one
setting for every dataset: no per-dataset values. ``oga+wca`` is OGA on WCA's scores,
weighted crop mean and text side (ours).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

from pydantic import Field

from wca.deferred import torch
from wca.methods.base import OnlineHead
from wca.methods.gaussian import Discriminant
from wca.methods.online import Base, SlotCache, blocks, build_base, with_options
from wca.methods.ragged import check_counts
from wca.methods.registry import EncodeTexts, register_method
from wca.methods.sources import TextSources
from wca.methods.zero import LogitScale

if TYPE_CHECKING:
    from torch import Tensor

BLOCK = 256  # images whose base scores are computed at once


@dataclass
class OGAHead(OnlineHead):
    base: Base  # with its class vectors
    shot_capacity: int = 8
    tau: float = 0.05

    @property
    def uses_crops(self) -> bool:
        return self.base.uses_crops

    def stream(self, length: int | None = None) -> OGAStream:
        return OGAStream(self)


class OGAStream:
    """One stream of OGA: the memory, the means and the precision, carried from call to call.
    The covariance's sums are kept up to date in float64: sum_i x_i x_i^T over the stored
    images, sum_c (S_c mu_c^T + mu_c S_c^T - n_c mu_c mu_c^T) and sum_c (S_c - n_c mu_c), S_c
    and n_c the sum and count of class c's stored images."""

    def __init__(self, head: OGAHead) -> None:
        self.head = head
        self.means: Tensor | None = None  # [C, D] float64, on the first images' device

    def start(self, features: Tensor) -> None:
        head = self.head
        text = head.base.text.to(features.device).double()
        classes, dim = text.shape
        self.memory = SlotCache(classes, head.shot_capacity)
        self.stored = text.new_zeros(classes * head.shot_capacity, dim)
        self.filled = [False] * (classes * head.shot_capacity)
        self.means, self.sums = text.clone(), text.new_zeros(classes, dim)
        self.counts = [0] * classes
        self.second = text.new_zeros(dim, dim)
        self.cross = text.new_zeros(dim, dim)
        self.deviation = text.new_zeros(dim)
        self.precision = dim * torch.eye(dim).to(text)
        self.score: Discriminant | None = None
        self.dtype = features.dtype  # the working precision

    def logits(
        self, image_emb: Tensor, crop_emb: Tensor | None = None, *, counts: Tensor | None = None
    ) -> Tensor:
        counts = check_counts(counts, crop_emb)
        out = []
        for image, crops, part in blocks(BLOCK, image_emb, crop_emb, counts):
            features, logits = self.head.base.views(image, crops, False, counts=part)
            out.append(self._block(features[:, 0], logits[:, 0]))
        return torch.cat(out) if out else image_emb.new_zeros(0, len(self.head.base.text))

    def _block(self, features: Tensor, zero_shot: Tensor) -> Tensor:
        if self.means is None:
            self.start(features)
        probabilities = zero_shot.softmax(-1)
        entropies = (-(torch.log(probabilities + 1e-9) * probabilities).sum(-1)).tolist()
        labels = zero_shot.argmax(-1).tolist()
        out = torch.empty_like(zero_shot)
        for image, x in enumerate(features):
            slot = self.memory.insert(labels[image], entropies[image])
            if slot is not None:
                self._store(slot, labels[image], x)
            if self.score is None:
                self.score = Discriminant.of(self.means.to(x), self.precision.to(x))
            out[image] = zero_shot[image] + self.head.tau * self.score(x)
        return out.log_softmax(-1)

    def _store(self, slot: int, label: int, x: Tensor) -> None:
        """Put ``x`` in ``slot`` of class ``label``; refit that class's mean and the
        covariance (the authors' ``__update_mu`` and ``__update_sigma``)."""
        x64 = x.double()
        self._class_terms(label, -1)
        if self.filled[slot]:
            old = self.stored[slot]
            self.second -= torch.outer(old, old)
            self.sums[label] -= old
        else:
            self.counts[label] += 1
        self.stored[slot], self.filled[slot] = x64, True
        self.second += torch.outer(x64, x64)
        self.sums[label] += x64
        if self.counts[label] >= 2:
            self.means[label] = self.sums[label] / self.head.shot_capacity
        self._class_terms(label, 1)
        if max(self.counts) > 2:
            self.precision = self._precision()
        self.score = None

    def _class_terms(self, label: int, sign: int) -> None:
        """Add (``sign`` 1) or remove (-1) class ``label``'s terms of the covariance's sums."""
        mean, total, count = self.means[label], self.sums[label], self.counts[label]
        outer = torch.outer(total, mean)
        self.cross += sign * (outer + outer.T - count * torch.outer(mean, mean))
        self.deviation += sign * (total - count * mean)

    def _precision(self) -> Tensor:
        n, dim = sum(self.counts), len(self.second)
        mean = self.deviation / n
        covariance = (self.second - self.cross - n * torch.outer(mean, mean)) / (n - 1)
        covariance = covariance.to(self.dtype)
        if n <= 4 * dim:
            ridge = (n - 1) * covariance + covariance.trace() * torch.eye(dim).to(covariance)
            return dim * torch.linalg.pinv(ridge, hermitian=True)
        return torch.linalg.pinv(covariance, hermitian=True)


@register_method(
    "oga",
    summary="OGA (arXiv 2501.04352): Gaussian class likelihoods from a memory, zero-shot prior",
)
def _oga(
    encode_texts: EncodeTexts,
    sources: TextSources,
    base: str = "clip",
    shot_capacity: Annotated[int, Field(ge=1, le=1000)] = 8,
    tau: Annotated[float, Field(ge=0, le=1e6)] = 0.05,
    logit_scale: LogitScale = 100.0,
) -> OGAHead:
    """``shot_capacity`` images per class in memory; ``tau`` scales the Gaussian
    log-likelihoods in the MAP estimate; ``base`` the per-image method OGA starts from."""
    return OGAHead(
        build_base("oga", base, encode_texts, sources, logit_scale, with_text=True),
        shot_capacity,
        tau,
    )


register_method(
    "oga+wca",
    summary="OGA on WCA's scores and weighted crop mean (ours)",
)(with_options(_oga, base="wca"))
