"""The equations of WCA (Li et al., "Visual-Text Cross Alignment", ICML 2024, Sec. 3) on tensors.

Shapes: B images, N crops per image, C classes, M descriptions per class (padded, with a mask),
D embedding size. Every embedding is L2-normalised, so a dot product is a cosine similarity.
Scales are the log-scale values of the authors' configs: the softmax multiplier is exp(scale).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from wca.deferred import F, torch

if TYPE_CHECKING:
    from torch import Tensor


FORMS = ("reference", "paper")


def crop_weights(
    crop_emb: Tensor, image_emb: Tensor, image_scale: float, mask: Tensor | None = None
) -> Tensor:
    """w_i = softmax_i(exp(image_scale) * cos(crop_i, full image)): ``[B, N]``.

    Padding crops (``mask [B, N]`` False: an image with fewer crops) get weight 0.
    """
    logits = math.exp(image_scale) * torch.einsum("bnd,bd->bn", crop_emb, image_emb)
    if mask is not None:
        logits = logits.masked_fill(~mask, -math.inf)
    return torch.softmax(logits, dim=-1)


def description_weights(
    desc_emb: Tensor, label_emb: Tensor, text_scale: float, mask: Tensor | None = None
) -> Tensor:
    """v_j = softmax_j(exp(text_scale) * cos(desc_j, "a photo of a {class}.")): ``[C, M]``.

    Padding descriptions (``mask`` False) get weight 0.
    """
    logits = math.exp(text_scale) * torch.einsum("cmd,cd->cm", desc_emb, label_emb)
    if mask is not None:
        if not bool(mask.any(dim=1).all()):
            empty = (~mask.any(dim=1)).nonzero().flatten().tolist()
            raise ValueError(f"classes at indices {empty} have no description")
        logits = logits.masked_fill(~mask, -math.inf)
    return torch.softmax(logits, dim=-1)


def mean_embedding(emb: Tensor, mask: Tensor | None = None, normalize: bool = True) -> Tensor:
    """The (masked) mean of each class's embeddings ``[C, M, D] -> [C, D]``.

    ``normalize=True`` is the usual prompt-ensemble class vector; with ``normalize=False`` the
    dot product with an image embedding is the mean of the per-prompt scores.
    """
    if mask is None:
        mean = emb.mean(dim=1)
    else:
        weights = mask.to(emb.dtype)
        mean = torch.einsum("cm,cmd->cd", weights, emb) / weights.sum(dim=1, keepdim=True)
    return F.normalize(mean, dim=-1) if normalize else mean


def _check_form(form: str) -> None:
    if form not in FORMS:
        raise ValueError(f"form must be one of {FORMS}, got {form!r}")


def image_side(
    crop_emb: Tensor, image_emb: Tensor, image_scale: float, form: str, mask: Tensor | None = None
) -> Tensor:
    """sum_i w_i crop_i ``[B, D]`` (normalised in the reference form), over each image's own
    crops (``mask [B, N]``: padding crops have weight 0)."""
    _check_form(form)
    if mask is not None:  # padding may hold anything; it must not leak through 0 * nan
        crop_emb = crop_emb.masked_fill(~mask.unsqueeze(-1), 0.0)
    weights = crop_weights(crop_emb, image_emb, image_scale, mask)
    side = torch.einsum("bn,bnd->bd", weights, crop_emb)
    return F.normalize(side, dim=-1) if form == "reference" else side


def text_side(
    desc_emb: Tensor, label_emb: Tensor, text_scale: float, mask: Tensor | None, form: str
) -> Tensor:
    """sum_j v_j desc_j ``[C, D]`` (normalised in the reference form). It does not depend on
    the images, so a classifier computes it once."""
    _check_form(form)
    if mask is not None:  # padding may hold anything; it must not leak through 0 * nan
        desc_emb = desc_emb.masked_fill(~mask.unsqueeze(-1), 0.0)
    v = description_weights(desc_emb, label_emb, text_scale, mask)
    side = torch.einsum("cm,cmd->cd", v, desc_emb)
    return F.normalize(side, dim=-1) if form == "reference" else side


def wca_scores(
    crop_emb: Tensor,
    image_emb: Tensor,
    desc_emb: Tensor,
    label_emb: Tensor,
    image_scale: float,
    text_scale: float,
    mask: Tensor | None = None,
    form: str = "reference",
) -> Tensor:
    """Weighted visual-text cross alignment scores ``[B, C]``.

    - ``form="paper"``: sum_i sum_j w_i v_j cos(crop_i, desc_j), the weighted similarity matrix
      of the paper. By bilinearity it equals (sum_i w_i crop_i) . (sum_j v_j desc_j), so the
      ``[B, N, C, M]`` matrix is never built.
    - ``form="reference"``: normalize(sum_i w_i crop_i) . normalize(sum_j v_j desc_j), what the
      authors' code computes and what produced the published numbers. It differs from the paper
      form by the per-class norm of the weighted description mean, which changes the ranking.
    """
    images = image_side(crop_emb, image_emb, image_scale, form)
    return images @ text_side(desc_emb, label_emb, text_scale, mask, form).T
