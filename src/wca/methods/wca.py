"""WCA's head: crops weighted against the full view, descriptions against the class label,
scored by :mod:`wca.scoring`."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import Field

from wca.defaults import IMAGE_SCALE, TEXT_SCALE
from wca.deferred import F, torch
from wca.descriptions.io import match_descriptions
from wca.methods.base import Head
from wca.methods.prompts import LABEL_TEMPLATE, PromptHead, encode_prompts
from wca.methods.ragged import crop_mask
from wca.methods.registry import EncodeTexts, register_method, require
from wca.methods.sources import TextSources
from wca.scoring import crop_weights, description_weights, image_side, text_side

if TYPE_CHECKING:
    from torch import Tensor

# exp(scale) multiplies cosines inside a softmax: beyond this the weights are one-hot anyway
LogScale = Annotated[float, Field(ge=-50.0, le=50.0)]


@dataclass(frozen=True)
class WCAHead(Head):
    """WCA: crops weighted against the full view, descriptions against the class label.

    Frozen, because the text side sum_j v_j desc_j is computed once at construction (use
    ``dataclasses.replace`` to try other scales).
    """

    desc_emb: Tensor  # [C, M, D], zero padding
    mask: Tensor  # [C, M]
    label_emb: Tensor  # [C, D]
    image_scale: float = IMAGE_SCALE
    text_scale: float = TEXT_SCALE
    form: str = "reference"
    text: Tensor = field(init=False, repr=False)  # [C, D] the text side of every class

    uses_crops = True
    pooled_runs = True
    evidence = True

    def __post_init__(self) -> None:
        side = text_side(self.desc_emb, self.label_emb, self.text_scale, self.mask, self.form)
        object.__setattr__(self, "text", side)

    def logits(
        self,
        image_emb: Tensor,
        crop_emb: Tensor | None = None,
        draw: int = 0,
        *,
        counts: Tensor | None = None,
    ) -> Tensor:
        """Scores ``[B, C]``; image b's crops are its first ``counts[b]`` (the padding after
        them is masked out of the crop weights)."""
        if crop_emb is None:
            raise ValueError("wca scores crops: pass crop embeddings [B, N, D]")
        images = self._image_side(image_emb, crop_emb, counts, self.form)
        return images @ self.text.to(images.dtype).T

    def image_features(
        self, image_emb: Tensor, crop_emb: Tensor, *, counts: Tensor | None = None
    ) -> Tensor:
        """The image side ``[B, D]`` as an online method's memory key: the weighted crop mean,
        normalised (the reference form's), whichever form scores."""
        if crop_emb is None:
            raise ValueError("wca's image side needs crop embeddings [B, N, D]")
        return self._image_side(image_emb, crop_emb, counts, "reference")

    def _image_side(
        self, image_emb: Tensor, crop_emb: Tensor, counts: Tensor | None, form: str
    ) -> Tensor:
        """sum_i w_i crop_i over each image's own crops, in the text's precision or the
        images' where higher."""
        dtype = torch.promote_types(image_emb.dtype, self.text.dtype)
        mask = crop_mask(crop_emb, counts)
        return image_side(crop_emb.to(dtype), image_emb.to(dtype), self.image_scale, form, mask)

    def text_features(self) -> Tensor:
        """The text side ``[C, D]``: the class vectors an online method keeps."""
        return self.text

    def pool_logits(self, image_emb: Tensor, crop_pool: Tensor, indices: Tensor) -> Tensor:
        """Scores ``[R, B, C]`` of R runs that each draw crops ``indices[r]`` from the pool.

        Run r's image side sum_k w_rk crop[idx_rk] equals sum_j W_rj crop_j, where W_rj adds
        up the weights of the draws of pool crop j: one batched product with the pool instead
        of R gathered copies of the crops.
        """
        crop_pool, image_emb = crop_pool.float(), image_emb.float()
        similarity = torch.einsum("bpd,bd->bp", crop_pool, image_emb)
        weights = torch.softmax(math.exp(self.image_scale) * similarity[:, indices], dim=-1)
        one_hot = F.one_hot(indices, crop_pool.shape[1]).to(weights.dtype)  # [R, K, pool]
        pooled = torch.einsum("brk,rkp->brp", weights, one_hot)
        images = torch.bmm(pooled, crop_pool)  # [B, R, D]
        if self.form == "reference":
            images = F.normalize(images, dim=-1)
        return (images @ self.text.T).transpose(0, 1)

    def description_weights(self) -> Tensor:
        """v ``[C, M]``: each description's weight against its class label."""
        return description_weights(self.desc_emb, self.label_emb, self.text_scale, self.mask)

    def crop_weights(
        self, image_emb: Tensor, crop_emb: Tensor, *, counts: Tensor | None = None
    ) -> Tensor:
        """w ``[B, N]``: each crop's weight against its full view (0 on padding)."""
        mask = crop_mask(crop_emb, counts)
        return crop_weights(crop_emb.float(), image_emb.float(), self.image_scale, mask)

    def crop_terms(self, image_emb: Tensor, crop_emb: Tensor) -> tuple[Tensor, Tensor]:
        """x_ic = crop_i . t_c ``[B, N, C]`` and exp(image_scale) cos(crop_i, full view)
        ``[B, N]``: WCA's score is sum_i softmax_i(logits) x_ic, up to one positive factor."""
        crop_emb, image_emb = crop_emb.float(), image_emb.float()
        logits = math.exp(self.image_scale) * torch.einsum("bnd,bd->bn", crop_emb, image_emb)
        return crop_emb @ self.text.float().T, logits

    def description_scores(
        self, classes: Sequence[int], weighted_crop: Tensor
    ) -> list[tuple[Tensor, Tensor]]:
        """Per class: each description's weight v_j and its similarity to the weighted crop
        mean sum_i w_i crop_i (so that the paper-form score is sum_j v_j similarity_j)."""
        v = self.description_weights()
        counts = self.mask.sum(1).tolist()
        return [
            (v[c, : counts[c]], self.desc_emb[c, : counts[c]] @ weighted_crop.float())
            for c in classes
        ]


def _wca_head(
    encode_texts: EncodeTexts, sources: TextSources, image_scale: float, text_scale: float, form
) -> WCAHead:
    names = sources.names("wca")
    sentences = require(sources.sentences, "wca", "sentences (cupl.json)")
    texts = match_descriptions(names, sentences, sources.origin("sentences", "wca"))
    desc_emb, mask = encode_prompts(encode_texts, texts)
    label_emb = encode_texts([LABEL_TEMPLATE.format(name) for name in names]).float()
    return WCAHead(desc_emb, mask, label_emb, image_scale, text_scale, form)


Form = Literal["reference", "paper"]


@register_method(
    "wca",
    summary="WCA (ICML 2024): descriptions aligned with weighted local crops",
)
def _wca(
    encode_texts: EncodeTexts,
    sources: TextSources,
    image_scale: LogScale = IMAGE_SCALE,
    text_scale: LogScale = TEXT_SCALE,
    form: Form = "reference",
) -> WCAHead:
    return _wca_head(encode_texts, sources, image_scale, text_scale, form)


# The ablations: which part of WCA brings the gain. A log-scale of -inf makes exp(scale) = 0,
# so a softmax over it gives equal weights.


@register_method("wca-uniform-crops", summary="WCA's ablation: every crop weighs the same")
def _wca_uniform_crops(
    encode_texts: EncodeTexts,
    sources: TextSources,
    text_scale: LogScale = TEXT_SCALE,
    form: Form = "reference",
) -> WCAHead:
    """WCA with every crop weighted equally (w_i = 1/N)."""
    return _wca_head(encode_texts, sources, -math.inf, text_scale, form)


@register_method(
    "wca-uniform-text",
    summary="WCA's ablation: every description weighs the same",
)
def _wca_uniform_text(
    encode_texts: EncodeTexts,
    sources: TextSources,
    image_scale: LogScale = IMAGE_SCALE,
    form: Form = "reference",
) -> WCAHead:
    """WCA with every description weighted equally (v_j = 1/M)."""
    return _wca_head(encode_texts, sources, image_scale, -math.inf, form)


@register_method("wca-full-view", summary="WCA's ablation: the full view alone, no crops")
def _wca_full_view(
    encode_texts: EncodeTexts,
    sources: TextSources,
    text_scale: LogScale = TEXT_SCALE,
    form: Form = "reference",
) -> PromptHead:
    """WCA's text side (weighted descriptions) against the full view alone, no crops."""
    head = _wca_head(encode_texts, sources, 0.0, text_scale, form)
    return PromptHead(head.text.unsqueeze(0))


@register_method(
    "wca-paper",
    summary="WCA scored as the paper writes it: the double sum of weighted cosines",
)
def _wca_paper(
    encode_texts: EncodeTexts,
    sources: TextSources,
    image_scale: LogScale = IMAGE_SCALE,
    text_scale: LogScale = TEXT_SCALE,
) -> WCAHead:
    """WCA as the paper writes it (form="paper": no normalisation of the two sides)."""
    return _wca_head(encode_texts, sources, image_scale, text_scale, "paper")
