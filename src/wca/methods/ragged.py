"""Images with different numbers of crops (anytime views: an image reads crops until its answer
is settled, so its crops are a prefix of its fixed-N ones).

Ragged crops travel padded: ``crop_emb [B, N, D]`` and ``counts`` (integers ``[B]``, 1 to N),
image b's crops being rows ``0 .. counts[b] - 1``; the rows after are padding whose values are
arbitrary (NaN included) and change no score. ``counts=None``: every image has all N crops.

A head excludes the padding with a mask (:func:`crop_mask`: -inf logits, zero weights) where its
algorithm is a weighted sum (WCA), or scores the images of each length at once on their own
prefix (:func:`by_count`, :func:`by_length`, :func:`per_image`) where its algorithm counts or
sorts the views (ZERO's int(V gamma), MTA's bandwidths, the Sinkhorn loops of AWT and LaZSL,
the int(0.1 V) most confident views of TDA, DMN and DOTA); a loop over images reads each
image's own views (:func:`own`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from wca.deferred import torch

if TYPE_CHECKING:
    from torch import Tensor


def counts_of(counts: Tensor, batch: int, n_crops: int, read: Tensor | None = None) -> Tensor:
    """``counts`` as a long tensor, after checking it gives each of ``batch`` images 1 to
    ``n_crops`` crops (only the images ``read [batch]`` where given)."""
    counts = torch.as_tensor(counts)
    if counts.shape != (batch,) or counts.is_floating_point() or counts.dtype == torch.bool:
        raise ValueError(
            f"counts: must be integers [B] = [{batch}], one per image; got {counts.dtype} "
            f"of shape {list(counts.shape)}"
        )
    checked = counts if read is None else counts[read]
    if len(checked) and not bool(((checked >= 1) & (checked <= n_crops)).all()):
        raise ValueError(
            f"counts: each image has 1 to N = {n_crops} crops; got {int(checked.min())} to "
            f"{int(checked.max())}"
        )
    return counts.long()


def check_counts(counts: Tensor | None, crop_emb: Tensor | None) -> Tensor | None:
    """``counts`` as a long tensor on the crops' device, after checking it fits ``crop_emb``
    ``[B, N, D]`` (:func:`counts_of`); None stays None."""
    if counts is None:
        return None
    if crop_emb is None:
        raise ValueError("counts: given without crop embeddings [B, N, D]")
    return counts_of(counts, *crop_emb.shape[:2]).to(crop_emb.device)


def crop_mask(crop_emb: Tensor, counts: Tensor | None) -> Tensor | None:
    """``bool [B, N]``, True on each image's own crops (None when ``counts`` is None)."""
    counts = check_counts(counts, crop_emb)
    if counts is None:
        return None
    return torch.arange(crop_emb.shape[1], device=crop_emb.device) < counts[:, None]


def zero_padding(crop_emb: Tensor, counts: Tensor | None) -> Tensor:
    """``crop_emb`` with its padding rows set to 0, so that no NaN there leaks through a
    product with a zero weight (unchanged when ``counts`` is None)."""
    mask = crop_mask(crop_emb, counts)
    return crop_emb if mask is None else crop_emb.masked_fill(~mask.unsqueeze(-1), 0.0)


def groups(lengths: Tensor) -> Iterator[tuple[int, Tensor]]:
    """``(length, rows)`` for each length in ``lengths [B]``: the images that have it."""
    for length in lengths.unique().tolist():
        yield length, (lengths == length).nonzero().flatten()


def _scatter(parts: Iterator[tuple[Tensor, Any]], batch: int) -> Any:
    """Outputs ``[B, ...]`` (a tensor or a tuple of them) from each group's rows and outputs."""
    out: list[Tensor] | None = None
    single = False
    for rows, part in parts:
        single = isinstance(part, torch.Tensor)
        values = (part,) if single else tuple(part)
        if out is None:
            out = [value.new_empty(batch, *value.shape[1:]) for value in values]
        for whole, value in zip(out, values, strict=True):
            whole[rows.to(whole.device)] = value
    assert out is not None
    return out[0] if single else tuple(out)


def by_count(
    score: Callable[[Tensor, Any], Tensor],
    image_emb: Tensor,
    crop_emb: Tensor | None,
    counts: Tensor | None,
) -> Tensor:
    """``score(image_emb, crop_emb)`` ``[B, ...]`` with each image on its own crops: the images
    of each count at once, on ``crop_emb[rows, :count]`` (one call when ``counts`` is None)."""
    counts = check_counts(counts, crop_emb)
    if counts is None or crop_emb is None or not len(counts):
        return score(image_emb, crop_emb)
    return _scatter(
        ((rows, score(image_emb[rows], crop_emb[rows, :count])) for count, rows in groups(counts)),
        len(counts),
    )


def by_length(function: Callable[..., Any], lengths: Tensor | None, *views: Tensor) -> Any:
    """``function(*views)`` with each image on its own views: ``views`` are ``[B, V, ...]``,
    image b's the first ``lengths[b]``; the images of each length at once. Its outputs (a
    tensor or a tuple of tensors, a row per image) in image order; one call when ``lengths``
    is None (every image has all V)."""
    if lengths is None or not len(lengths):
        return function(*views)
    return _scatter(
        ((rows, function(*(v[rows, :length] for v in views))) for length, rows in groups(lengths)),
        len(lengths),
    )


def per_image(
    function: Callable[..., tuple[Tensor, ...]], lengths: Tensor | None, *views: Tensor
) -> list[tuple[Tensor, ...]]:
    """As :func:`by_length`, for outputs whose rows differ in shape from one length to another
    (the most confident int(0.1 V) views): per image, in image order, its row of each output."""
    if lengths is None:
        return list(zip(*function(*views), strict=True))
    out: list[tuple[Tensor, ...]] = [()] * len(lengths)
    for length, rows in groups(lengths):
        outputs = function(*(v[rows, :length] for v in views))
        for row, values in zip(rows.tolist(), zip(*outputs, strict=True), strict=True):
            out[row] = values
    return out


def own(values: Tensor, lengths: Tensor | None, image: int) -> Tensor:
    """Image ``image``'s own rows of ``values [B, V, ...]``: its first ``lengths[image]``."""
    return values[image] if lengths is None else values[image, : int(lengths[image])]
