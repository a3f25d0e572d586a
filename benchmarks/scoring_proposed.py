"""A proposed faster WCA head, measured by ``benchmarks/scoring.py --variant proposed``.

The library's ``WCAHead.logits`` recomputes the whole text side on every call: it masks a copy
of ``desc_emb`` (``[C, M, D]``: 100 MB at ImageNet size) and recomputes the description weights
and the weighted description means, although none of them depends on the images. An evaluation
calls it once per chunk and run (25 chunks x 20 runs at ImageNet size). This head computes the
text side once and gives the same scores.

:func:`evaluate_wca_runs` goes further, for ``wca.evaluate``: it scores all runs of a chunk at
once without the per-run gathered copy of the crops (see its docstring).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from wca.evaluate import DEFAULT_CHUNK, _Tally
from wca.features import Features
from wca.methods import WCAHead
from wca.scoring import crop_weights, description_weights


@dataclass
class FastWCAHead:
    """WCA with the text side ``sum_j v_j desc_j`` (normalised in the reference form) cached."""

    text_side: Tensor  # [C, D]
    image_scale: float
    form: str
    uses_crops: bool = True
    n_draws: int = 1

    @classmethod
    def from_head(cls, head: WCAHead) -> FastWCAHead:
        desc_emb = head.desc_emb.masked_fill(~head.mask.unsqueeze(-1), 0.0)
        weights = description_weights(desc_emb, head.label_emb, head.text_scale, head.mask)
        text_side = torch.einsum("cm,cmd->cd", weights, desc_emb)
        if head.form == "reference":
            text_side = F.normalize(text_side, dim=-1)
        return cls(text_side, head.image_scale, head.form)

    def logits(self, image_emb: Tensor, crop_emb: Tensor | None = None, draw: int = 0) -> Tensor:
        if crop_emb is None:
            raise ValueError("wca scores crops: pass crop embeddings [B, N, D]")
        crop_emb, image_emb = crop_emb.float(), image_emb.float()
        weights = crop_weights(crop_emb, image_emb, self.image_scale)
        image_side = torch.bmm(weights.unsqueeze(1), crop_emb).squeeze(1)
        if self.form == "reference":
            image_side = F.normalize(image_side, dim=-1)
        return image_side @ self.text_side.T



def evaluate_wca_runs(
    features: Features, head: FastWCAHead, indices: Tensor, chunk_size: int = DEFAULT_CHUNK
) -> tuple[Tensor, Tensor]:
    """Top-1 and top-5 correct counts per run ``[R]`` of WCA over the pool protocol's
    ``indices [R, patch_n]``, all runs of a chunk at once and without gathering crops.

    Run ``r`` weights its drawn crops ``k`` by ``w_rk = softmax_k(s * cos(crop_idx[r,k], image))``
    and its image side is ``sum_k w_rk crop_idx[r,k] = sum_j W_rj crop_j`` with ``W_rj`` the sum
    of ``w_rk`` over the draws of pool crop ``j`` (duplicates included): one ``bmm`` of
    ``W [B, R, pool]`` with the pool, instead of ``R`` gathered ``[B, patch_n, D]`` copies.
    Chunks are copied into one reused fp32 buffer (fresh 100+ MB tensors cost page faults).
    """
    n_run = indices.shape[0]
    one_hot = F.one_hot(indices, features.n_samples).float()  # [R, patch_n, pool]
    scale = math.exp(head.image_scale)
    tally = _Tally(n_run, head.text_side.shape[0])
    buffer = torch.empty(0)
    for _, chunk in features.chunks(chunk_size):
        if buffer.shape != chunk.crop_emb.shape:
            buffer = torch.empty(chunk.crop_emb.shape)
        pool = buffer.copy_(chunk.crop_emb)
        image_emb = chunk.image_emb.float()
        similarity = torch.bmm(pool, image_emb.unsqueeze(-1)).squeeze(-1)  # [B, pool]
        weights = torch.softmax(scale * similarity[:, indices], dim=-1)  # [B, R, patch_n]
        pooled = torch.einsum("brk,rkj->brj", weights, one_hot)  # [B, R, pool]
        image_side = torch.bmm(pooled, pool)  # [B, R, D]
        if head.form == "reference":
            image_side = F.normalize(image_side, dim=-1)
        logits = (image_side @ head.text_side.T).transpose(0, 1)  # [R, B, C]
        labels = chunk.labels.long()
        for run in range(n_run):
            tally.add([run], logits[run], labels, None)
    return tally.top1, tally.top5
