"""Feature extraction under the adaptive crop budget: each image reads its crops in rounds
(:mod:`wca.features.rounds`) and the cache keeps each image's prefix.

The shards of an adaptive pass live under the *prefix key*: the fixed key without the number
of crops (``n_samples: null``, ``budget: "prefix"``), so runs of every maximum N and every rule
share them. A shard holds, per image, the crops encoded so far (``counts``; ``crop_emb``,
``boxes`` and ``flips`` padded with zeros to the longest). A run first judges each stored
shard with its own rule on the stored crops alone (no image is decoded); a shard whose images
all settle within them is used as it is. Otherwise the shard's images are read in rounds again,
the stored crops reused and only the crops past them encoded, and the shard is rewritten with
each image's longer prefix. Where the prefix store lacks a shard, the fixed pass's shard of the
same spec with N = ``max_crops`` (its every crop) stands in for it. So a larger N or a looser
rule encodes only the missing crops, and an interrupted run resumes from its finished shards
(a shard is written whole) with the same numbers. A fixed pass of N crops takes a shard of the
prefix store whose images all hold N crops or more (:func:`from_prefixes`).

Embeddings are judged as they are stored (fp16 with ``fp16_cache``), so a run that reads them
back from the cache stops every image where the run that encoded them did. The features handed
back hold every image's crops up to N (zeros after those it read) and ``counts``, the crops each
read (0 for an image skipped as unreadable).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from wca import preprocessing
from wca.features.cache import MANIFEST, ShardCache, assemble, cache_folder
from wca.features.extract import SKIPPED, _decoded, _FeaturePass, open_cache
from wca.features.judge import StoppingHead
from wca.features.rounds import Source, read_in_rounds, whole_image
from wca.features.views import BadImage, encode_views

PREFIX_TENSORS = ("image_emb", "crop_emb", "boxes", "flips", "labels", "counts")


def prefix_key(key: dict[str, Any]) -> dict[str, Any]:
    """The key of an adaptive pass's prefix store: the fixed key less its number of crops."""
    return {**key, "n_samples": None, "budget": "prefix"}


def known_prefix(tensors: dict[str, Tensor], row: int) -> Tensor | None:
    """Row ``row``'s stored embeddings ``[1 + m, D]`` (full view first); None if skipped."""
    if int(tensors["labels"][row]) == SKIPPED:
        return None
    count = int(tensors["counts"][row])
    return torch.cat([tensors["image_emb"][row : row + 1], tensors["crop_emb"][row, :count]])


def as_prefix(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    """A fixed pass's shard as a prefix shard: every valid image has all its crops."""
    valid = tensors["labels"] != SKIPPED
    return {**tensors, "counts": valid.long() * tensors["crop_emb"].shape[1]}


class RoundsPass(_FeaturePass):
    """An adaptive feature pass (see the module doc): the fixed pass's shards, claims and view
    pipeline, each shard encoded in rounds with ``stopping``."""

    def __init__(self, *args: Any, stopping: StoppingHead, store_dtype: torch.dtype) -> None:
        super().__init__(*args)
        self.stopping, self.store_dtype = stopping, store_dtype
        self.max_crops = stopping.budget.max_crops
        self.known: dict[int, dict[str, Tensor]] = {}  # shards to extend: what they hold
        self.read: dict[int, Tensor] = {}  # per shard, the crops each image read this run

    def _make_views(self) -> tuple[Any, Any]:
        """The loader hands on the decoded image (PIL for fidelity views); the rounds cut
        its views (:meth:`_cut`, on the device where the fixed pass cuts there)."""
        if self.fidelity:
            return whole_image, None
        return super()._make_views() if self.views_on_device else (_decoded, None)

    def judged(self, tensors: dict[str, Tensor]) -> Tensor | None:
        """The crops each image of a stored shard reads under this run's rule, judged on the
        stored crops alone; None if an image needs more than are stored."""
        labels = tensors["labels"]
        sources = (
            Source(row, None, tensors["boxes"][row], tensors["flips"][row], known)
            for row in range(len(labels))
            if (known := known_prefix(tensors, row)) is not None
        )
        read = torch.zeros(len(labels), dtype=torch.long)
        for row, embeddings in read_in_rounds(sources, self.stopping, None, 1, None):
            if embeddings is None:
                return None
            read[row] = len(embeddings) - 1
        return read

    def plan(self, key: dict, verify: bool, ranks: Any, strict: bool):
        """As the fixed pass's plan, on the prefix store: a stored (or fixed) shard whose images
        all settle within its crops is done; one that does not is to do, its crops kept."""
        cache, ranges, parts, mine = super().plan(prefix_key(key), verify, ranks, strict)
        fixed = None if cache is None else self._fixed_cache(key)
        for shard in mine:
            stored = parts[shard]
            if stored is None and fixed is not None and fixed.shard_range(shard) == ranges[shard]:
                found = fixed.load(shard, verify)
                if found is not None and (not strict or bool((found["labels"] >= 0).all())):
                    stored = as_prefix(found)
            if stored is None:
                continue
            read = self.judged(stored)
            if read is None:
                self.known[shard], parts[shard] = stored, None
            else:
                self.read[shard], parts[shard] = read, stored
        return cache, ranges, parts, mine

    def _cache(self, key: dict) -> ShardCache:
        return store_cache(self.options, self.dataset, key)

    def _fixed_cache(self, key: dict) -> ShardCache | None:
        """The fixed pass's cache of this spec at N = ``max_crops``, if it was ever written."""
        if not (cache_folder(self.options.cache_dir, key) / MANIFEST).is_file():
            return None
        return self._cache(key)

    def encode_shard(self, shard, stream, indices, store_dtype, done, on_bad_image, cut):
        """The shard's images read in rounds, reusing what the store holds of them; the tensors
        hold each image's longest prefix (stored or read now)."""
        known = self.known.pop(shard, None)
        labels = torch.full((len(indices),), SKIPPED, dtype=torch.int64)
        boxes: dict[int, tuple[Tensor, Tensor]] = {}
        versions: list = []

        def sources():
            for row, expected in enumerate(indices):
                item = next(stream)
                versions.append(item.version)
                if isinstance(item, BadImage):
                    if on_bad_image is None:
                        raise item.error
                    on_bad_image(item.index, item.error)
                    done()
                    continue
                if item.index != expected:
                    raise RuntimeError(
                        f"feature pipeline out of order: got image {item.index}, want {expected}"
                    )
                labels[row] = item.label
                boxes[row] = item.boxes, item.flips
                stored = None if known is None else known_prefix(known, row)
                yield Source(row, item.views, item.boxes, item.flips, stored)
                done()

        def encode(views: Tensor) -> Tensor:  # judged as stored
            return encode_views(self.encoder, views).to(self.store_dtype)

        found = dict(
            read_in_rounds(
                sources(),
                self.stopping,
                encode,
                self.batch_size,
                functools.partial(self._cut, cut),
                max(1, self.options.num_workers),
            )
        )
        read = torch.zeros(len(indices), dtype=torch.long)
        longest: dict[int, Tensor] = {}
        for row, embeddings in found.items():
            read[row] = len(embeddings) - 1
            stored = None if known is None else known_prefix(known, row)
            longest[row] = embeddings if stored is None or len(stored) < len(embeddings) else stored
        self.read[shard] = read
        return self._tensors(indices, labels, boxes, longest), versions

    def _cut(self, device_cut: Any, pixels: Any, boxes: Tensor, flips: Tensor, full: bool):
        """An image's views of ``boxes`` (and its full view first, ``full``), as the fixed pass
        makes them (fidelity, on the device, or uint8 on the CPU)."""
        encoder = self.encoder
        if self.fidelity:
            size = encoder.preprocessing.image_size
            return preprocessing.fidelity_views(
                pixels, boxes, encoder.preprocess, flips, size, full=full
            )
        if device_cut is not None:
            pixels = pixels.to(encoder.device)
        return preprocessing.uint8_views(pixels, boxes, encoder.preprocessing, flips, full=full)

    def _tensors(self, indices, labels, boxes, longest) -> dict[str, Tensor]:
        """A prefix shard: every image's crops up to the longest, zeros after its own."""
        width = max([len(emb) - 1 for emb in longest.values()] + [1])
        dim = self.encoder.embed_dim
        image_emb = torch.zeros(len(indices), dim, dtype=self.store_dtype)
        crop_emb = torch.zeros(len(indices), width, dim, dtype=self.store_dtype)
        crop_boxes = torch.zeros(len(indices), width, 4, dtype=torch.int64)
        flips = torch.zeros(len(indices), width, dtype=torch.bool)
        counts = torch.zeros(len(indices), dtype=torch.long)
        for row, embeddings in longest.items():
            count = len(embeddings) - 1
            image_emb[row], crop_emb[row, :count], counts[row] = (
                embeddings[0],
                embeddings[1:],
                count,
            )
            crop_boxes[row, :count] = boxes[row][0][:count]
            flips[row, :count] = boxes[row][1][:count]
        return {"image_emb": image_emb, "crop_emb": crop_emb, "boxes": crop_boxes,
                "flips": flips, "labels": labels, "counts": counts}  # fmt: skip

    def features(self, parts: list[dict[str, Tensor]], folder: Path | None):
        """Every image's features up to ``max_crops`` crops, with the crops each read."""
        for shard, part in enumerate(parts):
            if shard not in self.read:  # finished by another process meanwhile
                self.read[shard] = self.judged(part)
        width = self.max_crops
        shaped = [{**part, **{name: _width(part[name], width) for name in
                              ("crop_emb", "boxes", "flips")}} for part in parts]  # fmt: skip
        counts = torch.cat([self.read[shard] for shard in range(len(parts))])
        return assemble(shaped, folder, counts)


def store_cache(options: Any, dataset: Any, key: dict) -> ShardCache:
    """The cache of ``key``; a prefix store's shards hold ``counts`` too."""
    tensors = PREFIX_TENSORS if key.get("budget") == "prefix" else None
    return open_cache(options, dataset, key, tensors)


def from_prefixes(feature_pass: _FeaturePass, key: dict, ranges, parts, mine, verify, strict):
    """A fixed pass of N crops: its missing shards whose images the prefix store of its spec
    holds to N crops or more (an adaptive run read them), taken from there, cut to N."""
    options, n = feature_pass.options, feature_pass.spec.n_crops
    store_key = prefix_key(key)
    if (
        options.cache_dir is None
        or not (cache_folder(options.cache_dir, store_key) / MANIFEST).is_file()
    ):
        return
    store = store_cache(options, feature_pass.dataset, store_key)
    for shard in mine:
        if parts[shard] is not None or store.shard_range(shard) != ranges[shard]:
            continue
        found = store.load(shard, verify)
        if found is None:
            continue
        valid = found["labels"] != SKIPPED
        if (strict and not bool(valid.all())) or not bool((found["counts"][valid] >= n).all()):
            continue
        cut = {name: _width(found[name], n) for name in ("crop_emb", "boxes", "flips")}
        parts[shard] = {**{k: v for k, v in found.items() if k != "counts"}, **cut}


def _width(values: Tensor, width: int) -> Tensor:
    """``values [S, M, ...]`` cut or zero-padded to ``[S, width, ...]``."""
    if values.shape[1] >= width:
        return values[:, :width]
    pad = values.new_zeros(values.shape[0], width - values.shape[1], *values.shape[2:])
    return torch.cat([values, pad], dim=1)
