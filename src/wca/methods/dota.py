"""DOTA (Han et al., "DOTA: Distributional Test-Time Adaptation of Vision-Language Models",
NeurIPS 2025): per-class Gaussians with one shared covariance, estimated over the stream from
the zero-shot probabilities, as the authors' ``run_test_dota`` and ``DOTA`` (skylineeeeen/DOTA
``dota.py`` and ``utils.py``).

Per image, from its views' zero-shot logits (the base's, at ``logit_scale``):

- its views: the full view (``views="full"``: ImageNet and the fine-grained sets, read as one
  image), or the int(0.1 V) (at least 1) lowest-entropy views (``"confident"``: ImageNet-A/V/R/
  Sketch, read with 63 AugMix views + the image, TDA's loaders; V the image's own, 1 +
  counts[b] with ragged crops); its zero-shot logits are their mean;
- output: zero-shot logits + min(rho mean_c(n_c) / k, eta) (x Lambda mu_c - mu_c Lambda mu_c
  / 2), x the mean of its k views, before the image is fitted;
- fit, with each view's zero-shot probabilities y as soft labels: Sigma_c <- (n_c Sigma_c +
  sum_v y_vc (x_v - mu_c)(x_v - mu_c)^T) / (n_c + sum_v y_vc) (the old mean), mu_c <- (n_c
  mu_c + sum_v y_vc x_v) / (n_c + sum_v y_vc), n_c <- n_c + sum_v y_vc; Lambda <- ((1 -
  epsilon) mean_c Sigma_c + epsilon I)^-1.

Where the code differs from the paper, this follows the code: the means start at 0.001 in every
coordinate with n_c = 1 (the ``DOTA`` class would start at the class vectors; ``main`` passes it
a 0.001 matrix), Sigma_c at sigma I, Lambda at (sigma I)^+. Their half-precision Lambda and
means are kept in the working precision here. The memory holds C covariances (C D^2 values,
1 GB in float32 for ImageNet with ViT-B), as theirs. Per-dataset values (epsilon, eta, rho;
sigma is 0.002 in every config) are the authors' ``configs/vit/*.yaml``, ImageNet's for any
other dataset; ``dota+wca`` is DOTA on WCA's scores and weighted crop mean (ours).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, NamedTuple

from pydantic import Field

from wca.deferred import torch
from wca.methods.base import OnlineHead
from wca.methods.gaussian import Discriminant
from wca.methods.online import (
    Base,
    Views,
    Weight,
    block_size,
    blocks,
    build_base,
    entropy,
    for_dataset,
    most_confident,
    take,
    tuned_for,
    with_options,
)
from wca.methods.ragged import check_counts, per_image
from wca.methods.registry import EncodeTexts, register_method
from wca.methods.sources import TextSources
from wca.methods.tda import TDA_CONFIGS
from wca.methods.zero import LogitScale

if TYPE_CHECKING:
    from torch import Tensor


class DOTAConfig(NamedTuple):
    epsilon: float
    eta: float
    rho: float


# skylineeeeen/DOTA configs/vit/*.yaml by our dataset names
DOTA_CONFIGS = {
    "imagenet": DOTAConfig(1e-4, 0.2, 0.005),
    "imagenet-a": DOTAConfig(1e-4, 0.5, 0.02),
    "imagenetv2": DOTAConfig(1e-4, 0.1, 0.01),
    "imagenet-r": DOTAConfig(1e-4, 0.3, 0.0025),
    "imagenet-sketch": DOTAConfig(1e-4, 0.8, 0.03),
    "caltech101": DOTAConfig(0.002, 0.3, 0.02),
    "dtd": DOTAConfig(1e-4, 0.3, 0.02),
    "eurosat": DOTAConfig(1e-4, 3.0, 0.05),
    "fgvc": DOTAConfig(1e-4, 0.2, 0.01),
    "food101": DOTAConfig(4e-5, 0.1, 0.01),
    "oxford-flowers": DOTAConfig(1e-4, 0.2, 0.02),
    "oxford-pets": DOTAConfig(1e-4, 0.3, 0.02),
    "stanford-cars": DOTAConfig(1e-4, 0.3, 0.01),
    "sun397": DOTAConfig(1e-4, 0.2, 0.01),
    "ucf101": DOTAConfig(1e-4, 0.4, 0.02),
}


def chosen_views(features: Tensor, logits: Tensor, views: str) -> tuple[Tensor, Tensor]:
    """Each image's views ``[B, k, D]`` and their logits ``[B, k, C]``: the full view, or the
    int(0.1 V) (at least 1) of lowest entropy (DOTA's and BCA's ``"confident"``)."""
    if views == "full":
        return features[:, :1], logits[:, :1]
    chosen = most_confident(entropy(logits))
    return take(features, chosen), take(logits, chosen)


@dataclass
class DOTAHead(OnlineHead):
    base: Base
    views: str = "full"
    epsilon: float = 1e-4
    sigma: float = 0.002
    eta: float = 0.2
    rho: float = 0.005

    @property
    def uses_crops(self) -> bool:
        return self.base.uses_crops or self.views == "confident"

    def stream(self, length: int | None = None) -> DOTAStream:
        return DOTAStream(self)


class DOTAStream:
    """One stream of DOTA: the means ``[C, D]``, the counts n_c, the scatters n_c Sigma_c
    ``[C, D, D]`` and the precision Lambda, carried from call to call."""

    def __init__(self, head: DOTAHead) -> None:
        self.head = head
        self.means: Tensor | None = None

    def start(self, features: Tensor, logits: Tensor) -> None:
        x, classes, sigma = features, logits.shape[-1], self.head.sigma
        dim = x.shape[-1]
        eye = torch.eye(dim, dtype=x.dtype, device=x.device)
        self.means = x.new_full((classes, dim), 0.001)
        self.counts = x.new_ones(classes)
        self.scatters = (sigma * eye).repeat(classes, 1, 1)
        self.precision = eye / sigma

    def logits(
        self, image_emb: Tensor, crop_emb: Tensor | None = None, *, counts: Tensor | None = None
    ) -> Tensor:
        counts = check_counts(counts, crop_emb)
        several, base = self.head.views == "confident", self.head.base
        if self.means is None:  # the number of classes, from the first image's scores
            crops, first = (None if x is None else x[:1] for x in (crop_emb, counts))
            self.start(*base.views(image_emb[:1], crops, False, counts=first))
        views = 1 + (crop_emb.shape[1] if several and crop_emb is not None else 0)
        step = block_size(views * len(self.means))
        out = []
        for image, crops, part in blocks(step, image_emb, crop_emb, counts):
            features, logits = base.views(image, crops, several, counts=part)
            lengths = base.view_counts(part, several)
            out.append(self._block(per_image(self._chosen, lengths, features, logits)))
        return torch.cat(out) if out else image_emb.new_zeros(0, len(self.means))

    def _chosen(self, features: Tensor, logits: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Each image's chosen views ``[B, k, D]``, their soft labels ``[B, k, C]`` and its
        zero-shot logits ``[B, C]`` (their mean)."""
        features, logits = chosen_views(features, logits, self.head.views)
        return features, logits.softmax(-1), logits.mean(1)

    def _block(self, images: list[tuple[Tensor, ...]]) -> Tensor:
        """The outputs of images ``(views, soft labels, zero-shot logits)``, one by one."""
        head, out = self.head, []
        for x, y, zero_shot in images:
            weight = (head.rho * self.counts.mean() / len(x)).clamp(max=head.eta)
            score = Discriminant.of(self.means, self.precision)(x.mean(0))
            out.append(zero_shot + weight * score)
            self._fit(x, y)
        return torch.stack(out)

    def _fit(self, x: Tensor, y: Tensor) -> None:
        """The authors' ``fit`` then ``update`` on one image's views ``x [k, D]`` with soft
        labels ``y [k, C]``; the scatters n_c Sigma_c take the new terms in place."""
        total = y.sum(0)
        deviations = x[:, None] - self.means  # [k, C, D], from the old means
        weighted = (y[..., None] * deviations).permute(1, 2, 0)  # [C, D, k]
        self.scatters.baddbmm_(weighted, deviations.transpose(0, 1))
        self.means = (y.T @ x + self.counts[:, None] * self.means) / (self.counts + total)[:, None]
        self.counts = self.counts + total
        classes, dim = self.means.shape
        mean = ((1 / self.counts) @ self.scatters.view(classes, -1)).view(dim, dim) / classes
        eye = torch.eye(dim, dtype=x.dtype, device=x.device)
        epsilon = self.head.epsilon
        self.precision = torch.linalg.inv((1 - epsilon) * mean + epsilon * eye)


@register_method(
    "dota",
    per_dataset=tuned_for(TDA_CONFIGS),
    summary="DOTA (NeurIPS 2025): per-class Gaussians estimated over the stream",
)
def _dota(
    encode_texts: EncodeTexts,
    sources: TextSources,
    dataset: str | None = None,
    base: str = "clip",
    views: Views | None = None,
    epsilon: Annotated[float, Field(gt=0, le=1)] | None = None,
    sigma: Annotated[float, Field(gt=0, le=1e3)] = 0.002,
    eta: Weight | None = None,
    rho: Weight | None = None,
    logit_scale: LogitScale = 100.0,
) -> DOTAHead:
    """``dataset`` picks the authors' config (epsilon, eta, rho) and how they read it (views)
    for options left unset; ``base`` the per-image method DOTA starts from."""
    dataset = dataset or sources.dataset
    config = for_dataset(DOTA_CONFIGS, dataset)
    return DOTAHead(
        build_base("dota", base, encode_texts, sources, logit_scale),
        for_dataset(TDA_CONFIGS, dataset).views if views is None else views,
        config.epsilon if epsilon is None else epsilon,
        sigma,
        config.eta if eta is None else eta,
        config.rho if rho is None else rho,
    )


register_method(
    "dota+wca",
    per_dataset=tuned_for(TDA_CONFIGS),
    summary="DOTA on WCA's scores and weighted crop mean (ours)",
)(with_options(_dota, base="wca"))
