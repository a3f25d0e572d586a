"""The embeddings of one feature pass (:class:`Features`), as extracted or read from the shard
cache (:mod:`wca.features.cache`)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from torch import Tensor


class Features:
    """Embeddings of one feature pass, image ``i`` at row ``i``.

    ``image_emb [B, D]`` full views, ``crop_emb [B, N, D]`` crops, ``boxes [B, N, 4]`` crop
    boxes ``(left, top, right, bottom)``, ``labels [B]``, ``flips [B, N]`` whether a crop view
    was mirrored (all False when not given), ``counts [B]`` the crops image b read under an
    adaptive budget (its first ``counts[b]``; None: all N). Loaded from a cache, ``crop_emb`` is
    kept as one memory-mapped part per shard: :meth:`chunks` walks it without copying, while the
    :attr:`crop_emb` property concatenates (a full copy in memory).
    """

    def __init__(
        self,
        image_emb: Tensor,
        crop_emb: Tensor | Sequence[Tensor],
        boxes: Tensor,
        labels: Tensor,
        source: Path | None = None,
        flips: Tensor | None = None,
        counts: Tensor | None = None,
    ) -> None:
        parts = [crop_emb] if isinstance(crop_emb, Tensor) else list(crop_emb)
        rows = len(labels)
        if sum(len(p) for p in parts) != rows or len(image_emb) != rows or len(boxes) != rows:
            raise ValueError(
                f"features disagree on the number of images: image_emb {len(image_emb)}, "
                f"crop_emb {sum(len(p) for p in parts)}, boxes {len(boxes)}, labels {rows}"
            )
        self.image_emb = image_emb
        self.boxes = boxes
        self.flips = torch.zeros(boxes.shape[:2], dtype=torch.bool) if flips is None else flips
        self.labels = labels
        self.source = source  # the cache folder the features were read from, if any
        if counts is not None and counts.shape != (rows,):
            raise ValueError(f"features: counts {list(counts.shape)} for {rows} images")
        self.counts = counts
        self._parts = parts

    def __len__(self) -> int:
        return len(self.labels)

    def __repr__(self) -> str:
        return (
            f"Features(images={len(self)}, n_crops={self.n_crops}, dim={self.embed_dim}, "
            f"dtype={self.image_emb.dtype}, source={self.source})"
        )

    @property
    def n_crops(self) -> int:
        return self._parts[0].shape[1]

    @property
    def embed_dim(self) -> int:
        return self.image_emb.shape[1]

    @property
    def valid(self) -> Tensor:
        """``[B]`` bool: False for images skipped as unreadable (label -1)."""
        return self.labels >= 0

    @property
    def crop_emb(self) -> Tensor:
        return self._parts[0] if len(self._parts) == 1 else torch.cat(self._parts)

    def take(self, rows: Tensor, crops: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """The full views ``[len(rows), D]`` of images ``rows`` (in that order) and their crops
        ``crops`` (indices into the pool; None: no crops) ``[len(rows), len(crops), D]``, read
        from the stored parts without concatenating them."""
        image_emb = self.image_emb[rows]
        if crops is None:
            return image_emb, None
        out = torch.empty(len(rows), len(crops), self.embed_dim, dtype=self._parts[0].dtype)
        offset = 0
        for part in self._parts:
            mine = ((rows >= offset) & (rows < offset + len(part))).nonzero().flatten()
            if len(mine):
                out[mine] = part[rows[mine] - offset][:, crops]
            offset += len(part)
        return image_emb, out

    def chunks(self, size: int) -> Iterator[tuple[int, Features]]:
        """``(start, features of images start..start+size)`` in order; crop rows are views into
        the stored parts, so at most one chunk is ever paged in at a time."""
        if size < 1:
            raise ValueError(f"chunk size must be >= 1, got {size}")
        offset = 0
        for part in self._parts:
            for lo in range(0, len(part), size):
                hi = min(lo + size, len(part))
                rows = slice(offset + lo, offset + hi)
                yield (
                    offset + lo,
                    Features(
                        self.image_emb[rows],
                        part[lo:hi],
                        self.boxes[rows],
                        self.labels[rows],
                        flips=self.flips[rows],
                        counts=None if self.counts is None else self.counts[rows],
                    ),
                )
            offset += len(part)


def assemble(
    parts: Sequence[dict[str, Tensor]], source: Path | None, counts: Tensor | None = None
) -> Features:
    return Features(
        torch.cat([p["image_emb"] for p in parts]),
        [p["crop_emb"] for p in parts],
        torch.cat([p["boxes"] for p in parts]),
        torch.cat([p["labels"] for p in parts]),
        source=source,
        flips=torch.cat([p["flips"] for p in parts]),
        counts=counts,
    )
