"""LaZSL (Chen et al., "Interpretable Zero-Shot Learning with Locally-Aligned Vision-Language
Model", ICCV 2025): the crops of an image and the descriptions of a class aligned by optimal
transport, as the authors' ``OP_d.get_OP_distence`` with ``is_cost_global=True,
is_sim_global=True`` (shiming-chen/LaZSL ``OP.py``, ``main_OP.py``, ``load_OP.py``), batched
over images and classes.

Per image and class c, with crops r_m, full view g and the class's descriptions d_n (CLIP-D's
"{c}, which (is/has/...) {descriptor}", a full stop after it on ImageNet):

- mixed similarity s_mn = (1 - alpha) g.d_n + alpha r_m.d_n;
- crop marginal: uniform over the crops with r_m.g >= mean_m(r_m.g) + gamma, 0 elsewhere
  (with gamma > 0 none may pass: then the crop closest to the full view, where the authors'
  code returns None and fails; gamma <= 0 always keeps it); description marginal uniform;
- Sinkhorn on the kernel exp(-(1 - s) / 0.1): r = u / K c, c = v / K^T r, at most 100
  rounds, stopping once mean_m |r - r_old| < 0.01 (each image and class on its own);
- score: sum_mn T_mn s_mn.

The authors crop 90 views with alpha 0.6 (sides U(0.6, 0.9) x the short side); here the cache's
crops are the views.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

from pydantic import Field

from wca.deferred import torch
from wca.descriptions.io import match_descriptions
from wca.methods.base import Head
from wca.methods.online import for_dataset, tuned_for
from wca.methods.prompts import descriptor_prompts, encode_prompts
from wca.methods.ragged import by_count
from wca.methods.registry import EncodeTexts, register_method, require
from wca.methods.sources import TextSources

if TYPE_CHECKING:
    from torch import Tensor

EPSILON = 0.1
ITERATIONS = 100
TOLERANCE = 1e-2
BLOCK = 2**23  # similarities per sub-batch of images [b, C, M, N]: bounds the memory
# load_OP.py: the descriptions end with "." on ImageNet alone
SUFFIXES = {
    "imagenet": ".",
    "imagenetv2": "",
    "imagenet-r": "",
    "imagenet-a": "",
    "imagenet-sketch": "",
    "cub": "",
    "eurosat": "",
    "places365": "",
    "food101": "",
    "oxford-pets": "",
    "dtd": "",
}


def sinkhorn(kernel: Tensor, u: Tensor, v: Tensor, mask: Tensor) -> Tensor:
    """Transport plans ``[B, C, M, N]`` for kernels ``[B, C, M, N]`` (zero on padding
    descriptions), crop marginals ``u [B, M]``, description marginals ``v [C, N]`` (``mask``
    their real entries), by the authors' loop, stopping per image and class."""
    r = kernel.new_ones(kernel.shape[:3])
    c = kernel.new_ones(kernel.shape[:2] + kernel.shape[3:])
    active = torch.ones(kernel.shape[:2], dtype=torch.bool, device=kernel.device)
    for _ in range(ITERATIONS):
        new_r = u[:, None] / (kernel @ c.unsqueeze(-1)).squeeze(-1)
        column = (kernel.transpose(-1, -2) @ new_r.unsqueeze(-1)).squeeze(-1)
        new_c = torch.where(mask, v / column, 0.0)
        change = (new_r - r).abs().mean(-1)
        r = torch.where(active[..., None], new_r, r)
        c = torch.where(active[..., None], new_c, c)
        active &= change >= TOLERANCE
        if not bool(active.any()):
            break
    return r.unsqueeze(-1) * c.unsqueeze(-2) * kernel


@dataclass
class LaZSLHead(Head):
    uses_crops = True

    desc_emb: Tensor  # [C, N, D], zero padding
    mask: Tensor  # [C, N]
    alpha: float = 0.8
    gamma: float = 0.0

    def logits(
        self,
        image_emb: Tensor,
        crop_emb: Tensor | None = None,
        draw: int = 0,
        *,
        counts: Tensor | None = None,
    ) -> Tensor:
        """Scores ``[B, C]``; image b's crops are its first ``counts[b]`` (its own crop
        marginal and Sinkhorn; images grouped by count)."""
        if crop_emb is None:
            raise ValueError("lazsl aligns crops: pass crop embeddings [B, N, D]")
        return by_count(self._blocks, image_emb, crop_emb, counts)

    def _blocks(self, image_emb: Tensor, crop_emb: Tensor) -> Tensor:
        step = max(1, BLOCK // (self.mask.numel() * crop_emb.shape[1]))
        return torch.cat(
            [
                self._scores(image_emb[lo : lo + step], crop_emb[lo : lo + step])
                for lo in range(0, len(image_emb), step)
            ]
        )

    def _scores(self, image_emb: Tensor, crop_emb: Tensor) -> Tensor:
        dtype = torch.promote_types(image_emb.dtype, torch.float32)
        image, crops, desc = image_emb.to(dtype), crop_emb.to(dtype), self.desc_emb.to(dtype)
        to_full = torch.einsum("bmd,bd->bm", crops, image)
        kept = to_full >= to_full.mean(1, keepdim=True) + self.gamma
        closest = to_full == to_full.amax(1, keepdim=True)
        kept = torch.where(kept.any(1, keepdim=True), kept, closest)  # none passed: the closest
        u = kept.to(dtype) / kept.sum(1, keepdim=True)
        whole = torch.einsum("bd,cnd->bcn", image, desc)
        local = torch.einsum("bmd,cnd->bcmn", crops, desc)
        mixed = (1 - self.alpha) * whole.unsqueeze(2) + self.alpha * local
        mask = self.mask.to(mixed.device)
        kernel = torch.exp(-(1.0 - mixed) / EPSILON) * mask[:, None, :]
        v = mask.to(dtype) / mask.sum(-1, keepdim=True)
        plan = sinkhorn(kernel, u, v, mask)
        return (plan * mixed).sum((-1, -2))


@register_method(
    "lazsl",
    per_dataset=tuned_for(SUFFIXES, on_texts="suffix"),
    summary="LaZSL (ICCV 2025): crops aligned with CLIP-D's descriptions by optimal transport",
)
def _lazsl(
    encode_texts: EncodeTexts,
    sources: TextSources,
    dataset: str | None = None,
    alpha: Annotated[float, Field(ge=0, le=1)] = 0.8,
    gamma: Annotated[float, Field(ge=-2, le=2)] = 0.0,
    suffix: str | None = None,
) -> LaZSLHead:
    """``alpha`` the weight of the crops in the mixed similarity, ``gamma`` the margin over the
    mean crop-to-image similarity a crop needs; ``dataset`` picks ``suffix`` (the text after
    each description) when unset."""
    names = sources.names("clip-d")
    descriptors = require(sources.descriptors, "lazsl", "descriptors (clip-d.json)")
    descriptors = match_descriptions(names, descriptors, sources.origin("descriptors", "lazsl"))
    suffix = for_dataset(SUFFIXES, dataset or sources.dataset) if suffix is None else suffix
    emb, mask = encode_prompts(encode_texts, descriptor_prompts(names, descriptors, suffix=suffix))
    return LaZSLHead(emb, mask, alpha, gamma)
