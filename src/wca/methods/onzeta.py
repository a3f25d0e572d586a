"""OnZeta (Qian & Hu, "Online Zero-Shot Classification with CLIP", ECCV 2024): online label
learning and online proxy learning, as the authors' loop in ``main_online.py``
(idstcv/OnZeta), batched over blocks of images.

Image i (0-based) of a stream of n, with key x (the full view, or the base's image side):

- online label learning: t = softmax(zero-shot logits at 1 / tau_t) * exp(rho), normalised;
  rho <- max(0, rho - cr / sqrt(i + 1) (t - alpha / C));
- online proxy learning: v = softmax(x . w_c / tau_i) with proxies w (initially the class
  vectors); output beta sqrt((i + 1) / n) v + (1 - beta sqrt((i + 1) / n)) t;
  w <- normalise_columns(w - cw / sqrt(i + 1) / tau_i x (v - t)^T).

Within a block the proxies are w_start + x^T A scaled per column, so x . w needs one product
with the block's Gram matrix instead of a pass over w per image; exact, not approximate. The
state (proxies, rho) and each block's arithmetic are float64 whatever the features' precision:
the updates feed back into every later image, and in float32 their rounding alone (a block's
products rounded differently by its size) grows until one call and the same stream fed in
chunks disagree on some images (as the authors' float32 and float64 runs do); the outputs come
back in the features' precision (at least float32).
``beta`` and ``alpha`` per dataset are TTA-VLM's (``online_method/onzeta.py``): beta 0.8 on the
ImageNet family (the authors' only dataset) and 0.4 elsewhere, alpha 0 on Caltech-101.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

import numpy as np
from pydantic import Field

from wca.defaults import IMAGENET_FAMILY
from wca.deferred import F, torch
from wca.methods.base import OnlineHead
from wca.methods.online import Base, blocks, build_base, working_dtype
from wca.methods.ragged import check_counts
from wca.methods.registry import EncodeTexts, PerDataset, register_method
from wca.methods.sources import TextSources

if TYPE_CHECKING:
    from torch import Tensor

BLOCK = 128  # images whose proxy updates are carried in factored form
Positive = Annotated[float, Field(gt=0, le=1e6)]


@dataclass
class OnZetaHead(OnlineHead):
    base: Base  # scores at 1 / tau_t, with its class vectors
    tau_i: float = 0.04
    cw: float = 0.5
    cr: float = 20.0
    alpha: float = 1.0
    beta: float = 0.8

    @property
    def uses_crops(self) -> bool:
        return self.base.uses_crops

    def probabilities(self, logits: Tensor, logit_scale: float) -> Tensor:
        """The outputs are a mixture of two distributions already (summing to one)."""
        return logits / logits.sum(-1, keepdim=True)

    def stream(self, length: int | None = None) -> OnZetaStream:
        return OnZetaStream(self, length)


class OnZetaStream:
    """One stream of OnZeta: the proxies, the label-learning dual variable and the position in
    the stream. A stream of unknown ``length`` takes the first call's images as all of it."""

    def __init__(self, head: OnZetaHead, length: int | None) -> None:
        self.head, self.length = head, length
        self.proxies = F.normalize(head.base.text.double(), dim=-1).T.clone()  # [D, C]
        self.rho = np.zeros(self.proxies.shape[1])
        self.seen = 0

    def logits(
        self, image_emb: Tensor, crop_emb: Tensor | None = None, *, counts: Tensor | None = None
    ) -> Tensor:
        counts = check_counts(counts, crop_emb)
        if self.length is None:
            self.length = len(image_emb)
        if self.seen + len(image_emb) > self.length:
            raise ValueError(
                f"onzeta: this stream holds {self.length} images (its length, which sets the "
                f"beta schedule); {self.seen + len(image_emb)} arrived"
            )
        out = []
        for image, crops, part in blocks(BLOCK, image_emb, crop_emb, counts):  # in float64
            crops = None if crops is None else crops.double()
            features, logits = self.head.base.views(image.double(), crops, False, counts=part)
            out.append(self._block(features[:, 0], logits[:, 0]))
        dtype = working_dtype(image_emb)
        return torch.cat(out).to(dtype) if out else image_emb.new_zeros(0, self.proxies.shape[1])

    def _block(self, x: Tensor, text_logits: Tensor) -> Tensor:
        head, (size, classes) = self.head, text_logits.shape
        self.proxies = self.proxies.to(x.device)
        start = (x @ self.proxies).cpu().numpy()  # x_i . w at the block's start
        gram = (x @ x.T).cpu().numpy()
        text_probabilities = text_logits.softmax(-1).cpu().numpy()
        updates = np.zeros((size, classes), start.dtype)  # w = (w_start + x^T updates) scales
        scales = np.ones(classes, start.dtype)
        rho = self.rho.astype(start.dtype)
        out = np.empty((size, classes), start.dtype)
        for i in range(size):  # numpy: a few microseconds per step on vectors of C
            step = self.seen + i + 1
            label = text_probabilities[i] * np.exp(rho)
            label /= label.sum()
            rho = np.maximum(rho - head.cr / math.sqrt(step) * (label - head.alpha / classes), 0)
            similarity = (start[i] + gram[i, :i] @ updates[:i]) * scales  # x_i . w
            vision = np.exp((similarity - similarity.max()) / head.tau_i)
            vision /= vision.sum()
            beta = head.beta * math.sqrt(step / self.length)
            out[i] = beta * vision + (1 - beta) * label
            gradient = head.cw / math.sqrt(step) / head.tau_i * (vision - label)
            updates[i] = -gradient / scales
            # column norms of w - rate x (v - t)^T, each column of w being unit
            scales = scales / np.sqrt(1 - 2 * gradient * similarity + gradient**2 * gram[i, i])
        update, scale = (
            torch.from_numpy(updates).to(x.device),
            torch.from_numpy(scales).to(x.device),
        )
        self.proxies = F.normalize((self.proxies + x.T @ update) * scale, dim=0)
        self.rho = rho
        self.seen += size
        return torch.from_numpy(out).to(x.device)


# TTA-VLM's values are ImageNet's for its family, Caltech-101's, and one set for the others.
PER_DATASET = PerDataset((*IMAGENET_FAMILY, "caltech101"), fallback="other")


def dataset_values(dataset: str | None) -> tuple[float, float]:
    """TTA-VLM's (alpha, beta) for ``dataset`` (None: ImageNet's; ``other``: any dataset
    outside the ImageNet family but Caltech-101)."""
    key = PER_DATASET(dataset or "imagenet")
    return (0.0 if key == "caltech101" else 1.0), (0.8 if key in IMAGENET_FAMILY else 0.4)


@register_method(
    "onzeta",
    per_dataset=PER_DATASET,
    summary="OnZeta (ECCV 2024): online label learning and online proxy learning",
)
def _onzeta(
    encode_texts: EncodeTexts,
    sources: TextSources,
    dataset: str | None = None,
    base: str = "clip",
    tau_t: Annotated[float, Field(ge=0.001, le=100)] = 0.01,
    tau_i: Annotated[float, Field(gt=0, le=100)] = 0.04,
    cw: Positive = 0.5,
    cr: Positive = 20.0,
    alpha: Annotated[float, Field(ge=0, le=1)] | None = None,
    beta: Annotated[float, Field(ge=0, le=1)] | None = None,
) -> OnZetaHead:
    """``tau_t`` the temperature of the text proxies (the base is scored at 1 / tau_t),
    ``tau_i`` of the vision proxies; ``cw``, ``cr`` their learning rates; ``dataset`` picks
    ``alpha`` and ``beta`` when unset."""
    dataset_alpha, dataset_beta = dataset_values(dataset or sources.dataset)
    return OnZetaHead(
        build_base("onzeta", base, encode_texts, sources, 1 / tau_t, with_text=True),
        tau_i,
        cw,
        cr,
        dataset_alpha if alpha is None else alpha,
        dataset_beta if beta is None else beta,
    )
