"""ZERO (Farina et al., "Frustratingly Easy Test-Time Adaptation of Vision-Language Models",
NeurIPS 2023): the views vote, each for its top class, after keeping the most confident ones.

As the authors' ``Zero.zero``: probabilities softmax(logit_scale * cos) per view; the
``int(V * gamma)`` views of lowest entropy are kept (V = full view + the image's own crops,
1 + counts[b] where images have different numbers of crops); each kept view
votes one-hot for its argmax (their softmax at zero temperature). Ties between the top vote
counts go to the argmax of the first not-kept view, in entropy order, that is among the tied
classes; if none is, to the tied class with the highest logit in the first not-kept view (the
last view when all are kept). The tie-break adds 1 to the winner's count, so top-1 of the
scores is ZERO's prediction.
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

if TYPE_CHECKING:
    from torch import Tensor

LogitScale = Annotated[float, Field(gt=0, le=1000)]


def all_views(image_emb: Tensor, crop_emb: Tensor | None) -> Tensor:
    """``[B, 1 + N, D]``: the full view followed by the crops, in float32 (or float64)."""
    dtype = torch.promote_types(image_emb.dtype, torch.float32)
    views = image_emb.to(dtype).unsqueeze(1)
    return views if crop_emb is None else torch.cat([views, crop_emb.to(dtype)], dim=1)


@dataclass
class ZeroHead(Head):
    class_emb: Tensor  # [C, D]
    gamma: float = 0.3
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
        """Votes ``[B, C]``; image b's views are its full view and first ``counts[b]`` crops,
        so its V, and the int(V gamma) views kept, are its own (images grouped by count)."""
        return by_count(self._votes, image_emb, crop_emb, counts)

    def _votes(self, image_emb: Tensor, crop_emb: Tensor | None) -> Tensor:
        views = all_views(image_emb, crop_emb)
        batch, n_views = views.shape[:2]
        cos = views @ self.class_emb.to(views.dtype).T  # [B, V, C]
        log_p = torch.log_softmax(self.logit_scale * cos, dim=-1)
        entropy = -(log_p.exp() * log_p).sum(-1)
        order = torch.argsort(entropy, dim=1, stable=True)  # most confident first
        top = cos.argmax(-1).gather(1, order)  # [B, V] each view's class, in entropy order
        kept = int(n_views * self.gamma)
        counts = F.one_hot(top[:, :kept], cos.shape[-1]).sum(1).to(cos.dtype)  # [B, C]
        tied = counts == counts.max(dim=1, keepdim=True).values
        first_rest = order[:, min(kept, n_views - 1)]
        rows = torch.arange(batch, device=cos.device)
        fallback_logits = cos[rows, first_rest].masked_fill(~tied, -torch.inf)
        winner = fallback_logits.argmax(-1)
        if kept < n_views:
            rest = top[:, kept:]
            in_tie = tied.gather(1, rest)  # [B, V - kept]
            greedy = rest.gather(1, in_tie.int().argmax(1, keepdim=True)).squeeze(1)
            winner = torch.where(in_tie.any(1), greedy, winner)
        bonus = (tied.sum(1) > 1).to(cos.dtype)
        return counts.scatter_add(1, winner[:, None], bonus[:, None])

    def probabilities(self, logits: Tensor, logit_scale: float) -> Tensor:
        """The vote shares (counts / their sum, the tie-break's extra vote included): ZERO's
        own output, a softmax at zero temperature. Classes without a vote get probability 0,
        so an image whose true class got none costs the NLL's floor (-log 1e-12 = 27.6)."""
        return logits / logits.sum(-1, keepdim=True)


@register_method("zero", summary="ZERO (NeurIPS 2023): the most confident views vote")
def _zero(
    encode_texts: EncodeTexts,
    sources: TextSources,
    gamma: Annotated[float, Field(gt=0, le=1)] = 0.3,
    logit_scale: LogitScale = 100.0,
    text: ClassText = "clip",
) -> ZeroHead:
    """``text``: the baseline whose class vectors the views are scored against."""
    return ZeroHead(class_vectors(text, encode_texts, sources), gamma, logit_scale)
