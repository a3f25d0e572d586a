"""MTA (Zanella & Ben Ayed, "On the Test-Time Zero-Shot Generalization of Vision-Language
Models: Do We Really Need Prompt Learning?", CVPR 2024): MeanShift over the views, with
inlierness scores, as the authors' ``solve_mta``, batched over images.

Per image, over its V views x_v (full view first): bandwidth h_v = sqrt(mean of the squared
distances to its k = int(0.3 (V - 1)) nearest other views / 2) (k at least 1); affinity
A = softmax(logits) softmax(logits)^T. From the mode m = x_0 and uniform inlierness y, 5 outer
rounds alternate up to 5 inlierness steps y = softmax((K_h(m, x) + lambda_q A y) / lambda_y)
and up to 5 mode steps m = normalise(sum_v K_h(m, x_v) y_v x_v / sum_v K_h(m, x_v) y_v), each
loop stopping early per image once its update moves less than 1e-6. Scores:
logit_scale * m . class vectors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

from pydantic import Field

from wca.deferred import F, torch
from wca.methods.base import Head
from wca.methods.prompts import ClassText, class_vectors
from wca.methods.ragged import by_count
from wca.methods.registry import EncodeTexts, register_method
from wca.methods.sources import TextSources
from wca.methods.zero import LogitScale, all_views

if TYPE_CHECKING:
    from torch import Tensor

ITERATIONS = 5
TOLERANCE = 1e-6
MIN_BANDWIDTH = 1e-6  # identical views have bandwidth 0; the kernel then stays defined


def kernel(mode: Tensor, bandwidth: Tensor, views: Tensor) -> Tensor:
    """Gaussian density of every view around the mode: ``[B, V]``."""
    distance = (views - mode.unsqueeze(1)).norm(dim=-1)
    return torch.exp(-(distance**2) / (2 * bandwidth**2))


def bandwidths(views: Tensor) -> Tensor:
    """``[B, V]``: from each view's ``int(0.3 (V - 1))`` (at least 1) nearest other views."""
    n_views = views.shape[1]
    if n_views == 1:
        return views.new_ones(views.shape[:2])
    distance = torch.cdist(views, views, compute_mode="donot_use_mm_for_euclid_dist")
    k = max(int(0.3 * (n_views - 1)), 1)
    nearest = distance.sort(dim=-1).values[..., 1 : k + 1]
    return torch.sqrt(0.5 * (nearest**2).mean(-1)).clamp_min(MIN_BANDWIDTH)


def solve_mta(
    views: Tensor, logits: Tensor, lambda_y: float = 0.2, lambda_q: float = 4.0
) -> Tensor:
    """The mode ``[B, D]`` of every image's views ``[B, V, D]`` given their logits
    ``[B, V, C]``."""
    bandwidth = bandwidths(views)
    probabilities = logits.softmax(-1)
    affinity = probabilities @ probabilities.transpose(1, 2)  # [B, V, V]
    y = views.new_full(views.shape[:2], 1.0 / views.shape[1])
    mode = views[:, 0]
    for _ in range(ITERATIONS):
        density = kernel(mode, bandwidth, views)
        active = torch.ones(len(views), dtype=torch.bool, device=views.device)
        for _ in range(ITERATIONS):
            update = torch.bmm(affinity, y.unsqueeze(-1)).squeeze(-1)
            new_y = F.softmax((density + lambda_q * update) / lambda_y, dim=-1)
            moved = (new_y - y).norm(dim=-1)
            y = torch.where(active[:, None], new_y, y)
            active &= moved >= TOLERANCE
        active = torch.ones_like(active)
        for _ in range(ITERATIONS):
            weights = kernel(mode, bandwidth, views) * y
            total = weights.sum(-1, keepdim=True)
            new_mode = torch.einsum("bv,bvd->bd", weights, views) / total
            new_mode = new_mode / new_mode.norm(dim=-1, keepdim=True)
            moved = (new_mode - mode).norm(dim=-1)
            keep = ~active | (total.squeeze(-1) == 0)  # no weight left: the mode stays
            mode = torch.where(keep[:, None], mode, new_mode)
            active &= moved >= TOLERANCE
    return mode


@dataclass
class MTAHead(Head):
    class_emb: Tensor  # [C, D]
    lambda_y: float = 0.2
    lambda_q: float = 4.0
    logit_scale: float = 100.0

    uses_crops = True
    own_probabilities = True

    def logits(
        self,
        image_emb: Tensor,
        crop_emb: Tensor | None = None,
        draw: int = 0,
        *,
        counts: Tensor | None = None,
    ) -> Tensor:
        """Logits ``[B, C]``; image b's views are its full view and first ``counts[b]`` crops
        (its own V sets its bandwidths; images grouped by count)."""
        return by_count(self._mode_logits, image_emb, crop_emb, counts)

    def _mode_logits(self, image_emb: Tensor, crop_emb: Tensor | None) -> Tensor:
        views = all_views(image_emb, crop_emb)
        text = self.class_emb.to(views.dtype)
        mode = solve_mta(views, self.logit_scale * views @ text.T, self.lambda_y, self.lambda_q)
        return self.logit_scale * mode @ text.T

    def probabilities(self, logits: Tensor, logit_scale: float) -> Tensor:
        """softmax of the logits, which are at the model's temperature already."""
        return logits.softmax(-1)


@register_method(
    "mta",
    summary="MTA (CVPR 2024): MeanShift over the views with inlierness scores",
)
def _mta(
    encode_texts: EncodeTexts,
    sources: TextSources,
    lambda_y: Annotated[float, Field(gt=0)] = 0.2,
    lambda_q: Annotated[float, Field(ge=0)] = 4.0,
    logit_scale: LogitScale = 100.0,
    text: ClassText = "clip",
) -> MTAHead:
    """``text``: the baseline whose class vectors score the mode (and make the affinity)."""
    return MTAHead(class_vectors(text, encode_texts, sources), lambda_y, lambda_q, logit_scale)
