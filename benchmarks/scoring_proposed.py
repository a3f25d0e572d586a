"""Proposed faster WCA heads, measured by ``benchmarks/scoring.py``.

The library's ``WCAHead.logits`` recomputes the whole text side on every call: it masks a copy
of ``desc_emb`` (``[C, M, D]``: 100 MB at ImageNet size) and recomputes the description weights
and the weighted description means, although none of them depends on the images. An evaluation
calls it once per chunk and run. :class:`CachedTextWCAHead` computes the text side once.

:class:`PoolWCAHead` adds the ``pool_logits`` method that ``wca.evaluate`` uses when a head has
it: every run of a chunk is scored from the whole pool at once, without per-run copies of the
drawn crops. Both give the library's scores (to float rounding).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from wca.methods import WCAHead
from wca.scoring import crop_weights, description_weights


@dataclass
class CachedTextWCAHead:
    """WCA with the text side ``sum_j v_j desc_j`` (normalised in the reference form) cached."""

    text_side: Tensor  # [C, D]
    image_scale: float
    form: str
    uses_crops: bool = True
    n_draws: int = 1

    @classmethod
    def from_head(cls, head: WCAHead):
        desc_emb = head.desc_emb.masked_fill(~head.mask.unsqueeze(-1), 0.0)
        weights = description_weights(desc_emb, head.label_emb, head.text_scale, head.mask)
        text_side = torch.einsum("cm,cmd->cd", weights, desc_emb)
        if head.form == "reference":
            text_side = F.normalize(text_side, dim=-1)
        return cls(text_side, head.image_scale, head.form)

    def _score(self, image_side: Tensor) -> Tensor:
        if self.form == "reference":
            image_side = F.normalize(image_side, dim=-1)
        return image_side @ self.text_side.T

    def logits(self, image_emb: Tensor, crop_emb: Tensor | None = None, draw: int = 0) -> Tensor:
        if crop_emb is None:
            raise ValueError("wca scores crops: pass crop embeddings [B, N, D]")
        crop_emb, image_emb = crop_emb.float(), image_emb.float()
        weights = crop_weights(crop_emb, image_emb, self.image_scale)
        return self._score(torch.bmm(weights.unsqueeze(1), crop_emb).squeeze(1))


class PoolWCAHead(CachedTextWCAHead):
    """:class:`CachedTextWCAHead` plus ``pool_logits`` for ``wca.evaluate``."""

    def pool_logits(self, image_emb: Tensor, crop_pool: Tensor, indices: Tensor) -> Tensor:
        """Scores ``[R, B, C]`` of runs ``indices [R, P]`` (crop indices into the pool).

        Run ``r`` weights its drawn crops ``k`` by ``w_rk = softmax_k(s * cos(crop_idx[r,k],
        image))``; its image side ``sum_k w_rk crop_idx[r,k]`` equals ``sum_j W_rj crop_j``
        with ``W_rj`` the sum of ``w_rk`` over the draws of pool crop ``j`` (duplicates
        included): one ``bmm`` of ``W [B, R, pool]`` with the pool, no gathered copies.
        """
        crop_pool, image_emb = crop_pool.float(), image_emb.float()
        similarity = torch.bmm(crop_pool, image_emb.unsqueeze(-1)).squeeze(-1)  # [B, pool]
        weights = torch.softmax(math.exp(self.image_scale) * similarity[:, indices], dim=-1)
        one_hot = F.one_hot(indices, crop_pool.shape[1]).to(weights.dtype)  # [R, P, pool]
        pooled = torch.einsum("brk,rkj->brj", weights, one_hot)  # [B, R, pool]
        image_side = torch.bmm(pooled, crop_pool)  # [B, R, D]
        return self._score(image_side).transpose(0, 1)
