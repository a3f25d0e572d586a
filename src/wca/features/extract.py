"""Feature extraction: every image's full view and pool of crops through the image encoder, into
the shard cache (:mod:`wca.features.cache`) from the view pipeline (:mod:`wca.features.views`).

Views of consecutive images are packed into encoder batches of ``batch_size`` views
(:class:`~wca.features.views.ViewBatcher`); one shard of outputs is held in memory. Encoder
batches never straddle shards, so a resumed run repeats exactly the batches an uninterrupted run
makes and its features are bit-identical (same device, precision and ``batch_size``) -- and so
are those of a run split over ranks (:mod:`wca.features.distributed`).
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from wca import defaults, preprocessing
from wca.crops import CropSpec
from wca.errors import SettingError
from wca.features.cache import Features, ShardCache, assemble, cache_key
from wca.features.claims import ShardClaims
from wca.features.distributed import Ranks
from wca.features.identity import FileVersion, ImageList
from wca.features.judge import StoppingHead
from wca.features.views import (
    BadImage,
    ImageViews,
    ViewBatcher,
    ViewItems,
    encode_views,
    iterate_views,
)
from wca.files import Patience
from wca.options import RunOptions
from wca.progress import progress_bar

DEFAULT_BATCH_SIZE = defaults.BATCH_SIZE  # views per encoder forward pass
SKIPPED = -1  # the label of an image skipped as unreadable


def _decoded(image: Any, boxes: Tensor, flips: Tensor | None = None) -> Tensor:
    """The loader's half of views on the device: the decoded image alone, ``uint8 [3, H, W]``."""
    return preprocessing.image_to_tensor(image)


def _views_on(
    pixels: Tensor, boxes: Tensor, flips: Tensor, device: torch.device, prep: Any
) -> Tensor:
    """The encoder's half: the image moved to ``device`` once, every view cut and resized there
    (the fast path's antialiased resize, on that device's kernels)."""
    return preprocessing.uint8_views(pixels.to(device), boxes, prep, flips)


def _encode_shard(
    encoder: Any,
    stream: Iterator[ImageViews | BadImage],
    indices: range,
    n_views: int,
    batch_size: int,
    store_dtype: torch.dtype,
    done: Callable[[], None],
    on_bad_image: Callable[[int, Exception], None] | None = None,
    cut: Any = None,
) -> tuple[dict[str, Tensor], list[FileVersion | None]]:
    """Encode the images ``indices`` (next in ``stream``), ``n_views`` crops each, views packed
    ``batch_size`` at a time across images; the last batch of a shard may be short. An
    unreadable image raises, or with ``on_bad_image`` is reported to it and stored as skipped
    (label -1, zero embeddings). ``cut(pixels, boxes, flips)``: makes the views of a decoded
    image (views on the device), else the stream carries them. ``done()`` is called after
    each image. Returns the shard's tensors and the versions of its files as the stream read
    them."""
    emb = torch.zeros(len(indices), n_views + 1, encoder.embed_dim, dtype=torch.float32)
    boxes = torch.zeros(len(indices), n_views, 4, dtype=torch.int64)
    flips = torch.zeros(len(indices), n_views, dtype=torch.bool)
    labels = torch.full((len(indices),), SKIPPED, dtype=torch.int64)
    versions: list[FileVersion | None] = []
    batcher = ViewBatcher(functools.partial(encode_views, encoder), batch_size)

    def store(done: list[tuple[int, Tensor]]) -> None:
        for row, embeddings in done:
            emb[row] = embeddings

    for row, expected in enumerate(indices):
        item = next(stream)
        versions.append(item.version)
        match item:
            case BadImage(error=error) as bad:
                if on_bad_image is None:
                    raise error
                on_bad_image(bad.index, error)
            case ImageViews() as item:
                if item.index != expected:
                    raise RuntimeError(
                        f"feature pipeline out of order: got image {item.index}, want {expected}"
                    )
                views = item.views if cut is None else cut(item.views, item.boxes, item.flips)
                if views.shape[0] != n_views + 1:
                    raise ValueError(
                        f"image {item.index}: {views.shape[0]} views, want {n_views + 1}"
                    )
                boxes[row], flips[row], labels[row] = item.boxes, item.flips, item.label
                store(batcher.add(row, views))
        done()
    store(batcher.flush())
    emb = emb.to(store_dtype)
    tensors = {
        "image_emb": emb[:, 0].contiguous(),
        "crop_emb": emb[:, 1:].contiguous(),
        "boxes": boxes,
        "flips": flips,
        "labels": labels,
    }
    return tensors, versions


def _accept(tensors: dict[str, Tensor]) -> bool:
    """Whether a strict run (no skipping) may use a shard: it skipped no image."""
    return bool((tensors["labels"] >= 0).all())


def extract_features(
    encoder: Any,
    dataset: Any,
    crops_spec: CropSpec | None = None,
    options: RunOptions | None = None,
    *,
    fidelity: bool = False,
    fp16_cache: bool = False,
    verify: bool = True,
    on_bad_image: Callable[[int, Exception], None] | None = None,
    ranks: Ranks | None = None,
    stopping: StoppingHead | None = None,
    **legacy: Any,
) -> Features | None:
    """Embed every image of ``dataset``: its full view and the crops of ``crops_spec``.

    ``options`` (:class:`wca.options.RunOptions`): the cache folder (None: in memory only),
    views per encoder call, loader processes (0: one prefetching thread), images per shard,
    views cut on the device (default: on CUDA, fast path), progress. ``fidelity``: make views
    with the model's own preprocessing per crop (the authors' way) instead of the fast tensor
    path. ``fp16_cache``: store fp16. ``verify``: check every cached shard's sha256 before use.
    ``on_bad_image``: None stops at the first unreadable image (its error is raised); a
    function ``(index, error)`` is told of each one instead, and the image is kept as skipped:
    label :data:`SKIPPED`, zero embeddings (:attr:`Features.valid` is False there; a cached
    shard with skipped images is recomputed by a run that does not skip). ``ranks``
    (:func:`wca.features.distributed.join`): encode this rank's shards of the cache; rank 0
    returns every image's features once all ranks are done, the others None. ``stopping``
    (:class:`wca.features.judge.StoppingHead`): the adaptive crop budget, each image reading
    the spec's crops in rounds until the head settles it (:mod:`wca.features.adaptive`; one
    process); the features then carry ``counts``.

    The form of wca 0.2, ``extract_features(encoder, dataset, n_samples, alpha, beta=..,
    seed=.., cache_dir=.., batch_size=.., ...)``, still works and warns once
    (:func:`wca.compat.extract_arguments`).
    """
    if not isinstance(crops_spec, CropSpec) or legacy:
        from wca.compat import extract_arguments

        crops_spec, options, extra = extract_arguments(crops_spec, options, legacy)
        fidelity, fp16_cache = extra.get("fidelity", fidelity), extra.get("half", fp16_cache)
        fp16_cache = extra.get("fp16_cache", fp16_cache)
        verify, ranks = extra.get("verify", verify), extra.get("ranks", ranks)
        on_bad_image = extra.get("on_bad_image", on_bad_image)
    options = RunOptions() if options is None else options
    if len(dataset) == 0:
        raise ValueError(f"dataset {getattr(dataset, 'name', '')!r} has no images")
    views_on_device = options.views_on_device
    if views_on_device is None:
        views_on_device = encoder.device.type == "cuda" and not fidelity
    if views_on_device and fidelity:
        raise ValueError("views on the device use the fast path: not with fidelity views")
    if ranks is not None and options.cache_dir is None:
        raise ValueError("a distributed run needs a feature cache that every rank sees")
    store_dtype = torch.float16 if fp16_cache else torch.float32
    key = cache_key(encoder, dataset, crops_spec, fidelity, store_dtype)
    parts_of = (encoder, dataset, crops_spec, options, fidelity, views_on_device)
    if stopping is None:
        feature_pass = _FeaturePass(*parts_of)
    else:
        from wca.features.adaptive import RoundsPass

        if ranks is not None:
            raise ValueError("the adaptive crop budget runs in one process, not under torchrun")
        if stopping.budget.max_crops != crops_spec.n_crops:
            raise SettingError(
                "n_crops",
                f"{crops_spec.n_crops}, the budget reads at most "
                f"{stopping.budget.max_crops}: they must agree",
            )
        feature_pass = RoundsPass(*parts_of, stopping=stopping, store_dtype=store_dtype)
    cache, ranges, parts, mine = feature_pass.plan(key, verify, ranks, on_bad_image is None)
    if stopping is None and ranks is None:  # an adaptive run's prefixes, where they reach N
        from wca.features.adaptive import from_prefixes

        from_prefixes(feature_pass, key, ranges, parts, mine, verify, on_bad_image is None)
    todo = [s for s in mine if parts[s] is None]
    usable = _accept if on_bad_image is None else lambda tensors: True

    def accept(tensors: dict[str, Tensor]) -> bool:  # adaptive: it settles this run's images
        return usable(tensors) and (stopping is None or feature_pass.judged(tensors) is not None)

    claims = ShardClaims(cache, todo, verify, accept)
    work = functools.partial(
        feature_pass.fill,
        parts,
        ranges,
        claims,
        cache,
        store_dtype,
        on_bad_image,
        bar_total=sum(len(ranges[s]) for s in mine),
        ranks=ranks,
    )
    if ranks is None:
        work()
    else:
        with ranks.together("the feature pass"):
            work()
        if ranks.rank != 0:
            return None
        cache.merge_records()
        for shard, part in enumerate(parts):
            parts[shard] = part if part is not None else cache.load(shard, verify=False)
            if parts[shard] is None:
                raise RuntimeError(f"{cache.shard_path(shard)}: missing after every rank finished")
    complete = [part for part in parts if part is not None]  # every shard, after the loop
    folder = None if cache is None else cache.folder
    if stopping is not None:
        return feature_pass.features(complete, folder)
    return assemble(complete, folder)


def open_cache(options: RunOptions, dataset: Any, key: dict, tensors=None) -> ShardCache:
    """The shard cache of ``key`` for the run ``options`` (``tensors``: not the fixed pass's)."""
    return ShardCache(
        Path(options.cache_dir),
        key,
        len(dataset),
        options.shard_size,
        ImageList.of(dataset),
        Patience(options.lock_timeout, options.lock_takeover),
        tensors,
    )


class _FeaturePass:
    """One feature pass: which shards to compute (:meth:`plan`) and the loop that encodes them
    (:meth:`fill`): the loader or thread makes views, this process packs and encodes them, one
    shard at a time."""

    def __init__(
        self,
        encoder: Any,
        dataset: Any,
        crops_spec: CropSpec,
        options: RunOptions,
        fidelity: bool,
        views_on_device: bool,
    ) -> None:
        self.encoder, self.dataset, self.spec, self.options = encoder, dataset, crops_spec, options
        self.fidelity, self.views_on_device = fidelity, views_on_device
        self.batch_size = options.batch_size or DEFAULT_BATCH_SIZE

    def plan(self, key: dict, verify: bool, ranks: Ranks | None, strict: bool):
        """``(cache or None, shard ranges, parts already done (None: to do), this rank's
        shards)``; a strict run (no skipping) does not use a shard that skipped images."""
        num_images, shard_size = len(self.dataset), self.options.shard_size
        if self.options.cache_dir is None:
            ranges = [
                range(lo, min(lo + shard_size, num_images))
                for lo in range(0, num_images, shard_size)
            ]
            return None, ranges, [None] * len(ranges), list(range(len(ranges)))
        cache = self._cache(key)
        ranges = [cache.shard_range(s) for s in range(cache.num_shards)]
        mine = [s for s in range(cache.num_shards) if ranks is None or ranks.owns(s)]
        parts = [cache.load(s, verify) if s in mine else None for s in range(cache.num_shards)]
        if strict:
            parts = [p if p is None or _accept(p) else None for p in parts]
        return cache, ranges, parts, mine

    def _cache(self, key: dict) -> ShardCache:
        return open_cache(self.options, self.dataset, key)

    def _make_views(self) -> tuple[Callable[..., Tensor], Any]:
        """How the loader makes an image's views, and how this process finishes them (None:
        the loader's views are final)."""
        encoder = self.encoder
        if self.fidelity:
            size = encoder.preprocessing.image_size
            return functools.partial(
                preprocessing.fidelity_views, preprocess=encoder.preprocess, size=size
            ), None
        if self.views_on_device:
            cut = functools.partial(_views_on, device=encoder.device, prep=encoder.preprocessing)
            return _decoded, cut
        # uint8 views travel from the workers; encode_views normalises whole batches
        return functools.partial(preprocessing.uint8_views, prep=encoder.preprocessing), None

    def fill(
        self,
        parts: list[dict[str, Tensor] | None],
        ranges: list[range],
        claims: ShardClaims,
        cache: ShardCache | None,
        store_dtype: torch.dtype,
        on_bad_image: Callable[[int, Exception], None] | None,
        *,
        bar_total: int,
        ranks: Ranks | None,
    ) -> None:
        """Encode the shards ``claims.pending`` into ``parts`` (and the cache), in rounds: each
        encodes the shards no other process holds and loads those others finished; between
        rounds, wait for a shard another process holds (:mod:`wca.features.claims`)."""
        if not claims.pending:
            return
        bar = progress_bar(
            total=bar_total,
            initial=bar_total - sum(len(ranges[s]) for s in claims.pending),
            unit="img",
            desc=f"features {getattr(self.dataset, 'name', 'images')}",
            enabled=self.options.progress and (ranks is None or ranks.rank == 0),
        )
        try:
            while True:
                self._round(parts, ranges, claims, cache, store_dtype, on_bad_image, bar, ranks)
                for shard, tensors in claims.loaded.items():
                    parts[shard] = tensors
                    bar.update(len(ranges[shard]))
                claims.loaded.clear()
                claims.pending = [s for s in claims.pending if parts[s] is None]
                if not claims.pending:
                    return
                claims.wait()
        finally:
            claims.close()
            bar.close()

    def encode_shard(self, shard, stream, indices, store_dtype, done, on_bad_image, cut):
        """The tensors of shard ``shard`` (images ``indices``, next in ``stream``) and the
        versions of its files: every crop of the spec (:func:`_encode_shard`)."""
        return _encode_shard(
            self.encoder,
            stream,
            indices,
            self.spec.n_crops,
            self.batch_size,
            store_dtype,
            done,
            on_bad_image,
            cut,
        )

    def _round(self, parts, ranges, claims, cache, store_dtype, on_bad_image, bar, ranks) -> None:
        """One pass of the view pipeline over the shards this process claims as it goes."""
        make_views, cut = self._make_views()
        images = None if cache is None else cache.images
        items = ViewItems(
            self.dataset,
            range(len(self.dataset)),
            make_views,
            self.spec,
            version=None if images is None else images.version,
        )
        stream = iterate_views(items, self.options.num_workers, order=claims.images(ranges))

        def done() -> None:
            bar.update(1)
            claims.beat()  # the shards this process holds show its progress to waiters

        try:
            while (first := next(stream, None)) is not None:
                shard = claims.claimed.popleft()  # claimed before its first image was made
                tensors, versions = self.encode_shard(
                    shard,
                    itertools.chain([first], stream),
                    ranges[shard],
                    store_dtype,
                    done,
                    on_bad_image,
                    cut,
                )
                if cache is not None:
                    cache.write_shard(shard, tensors, versions, record=ranks is not None)
                    tensors = cache.load(shard, verify=False)
                    if tensors is None:
                        raise RuntimeError(f"{cache.shard_path(shard)}: unreadable after writing")
                parts[shard] = tensors
                claims.finish(shard)
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()
            del stream
