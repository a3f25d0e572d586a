"""Feature extraction: every image's full view and pool of crops through the image encoder, into
the shard cache (:mod:`wca.features.cache`) from the view pipeline (:mod:`wca.features.views`).

Views of consecutive images are packed into encoder batches of ``batch_size`` views; one shard
of outputs is held in memory. Encoder batches never straddle shards, so a resumed run repeats
exactly the batches an uninterrupted run makes and its features are bit-identical (same device,
precision and ``batch_size``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from wca import crops
from wca.features.cache import DEFAULT_SHARD_SIZE, Features, ShardCache, assemble, cache_key
from wca.features.views import ViewItems, iterate_views
from wca.scoring import require_finite

DEFAULT_BATCH_SIZE = 256  # views per encoder forward pass
SKIPPED = -1  # the label of an image skipped as unreadable


def _encode_shard(
    encoder: Any,
    stream: Iterator[tuple[int, Tensor, Tensor, Tensor, int]],
    indices: range,
    n_samples: int,
    batch_size: int,
    store_dtype: torch.dtype,
    bar: tqdm,
    on_bad_image: Callable[[int, Exception], None] | None = None,
) -> dict[str, Tensor]:
    """Encode the images ``indices`` (next in ``stream``), views packed ``batch_size`` at a time
    across images; the last batch of a shard may be short. An unreadable image raises, or with
    ``on_bad_image`` is reported to it and stored as skipped (label -1, zero embeddings)."""
    views_per_image = n_samples + 1
    out = torch.empty(len(indices) * views_per_image, encoder.embed_dim, dtype=torch.float32)
    boxes = torch.empty(len(indices), n_samples, 4, dtype=torch.int64)
    flips = torch.empty(len(indices), n_samples, dtype=torch.bool)
    labels = torch.empty(len(indices), dtype=torch.int64)
    pending: list[Tensor] = []
    queued = written = 0
    good: list[int] = []  # rows of the images read

    def flush(count: int) -> None:
        nonlocal pending, queued, written
        views = torch.cat(pending) if len(pending) > 1 else pending[0]
        batch = views[:count]
        if batch.dtype == torch.uint8:  # normalised where the encoder runs: 4x fewer bytes moved
            batch = batch.to(encoder.device, non_blocking=True)
            batch = crops.normalize_pixels(batch, encoder.preprocessing)
        with torch.inference_mode():
            emb = encoder.encode_images(batch)
        if emb.shape != (count, encoder.embed_dim):
            raise ValueError(f"encoder returned {tuple(emb.shape)} for {count} views")
        require_finite(emb, getattr(encoder, "name", "the encoder"))
        out[written : written + count] = emb
        written += count
        rest = views[count:]
        pending, queued = ([rest] if len(rest) else []), len(rest)

    for row, expected in enumerate(indices):
        item = next(stream)
        if len(item) == 2:
            if on_bad_image is None:
                raise item[1]
            on_bad_image(*item)
            boxes[row], flips[row], labels[row] = 0, False, SKIPPED
            bar.update(1)
            continue
        index, views, image_boxes, image_flips, label = item
        if index != expected:
            raise RuntimeError(f"feature pipeline out of order: got image {index}, want {expected}")
        if views.shape[0] != views_per_image:
            raise ValueError(f"image {index}: {views.shape[0]} views, want {views_per_image}")
        boxes[row], flips[row], labels[row] = image_boxes, image_flips, label
        good.append(row)
        pending.append(views)
        queued += len(views)
        while queued >= batch_size:
            flush(batch_size)
        bar.update(1)
    if queued:
        flush(queued)
    emb = out.view(len(indices), views_per_image, -1)
    if len(good) < len(indices):  # skipped images keep zero rows
        rows = torch.tensor(good, dtype=torch.long)
        emb = torch.zeros_like(emb).index_copy_(0, rows, emb[: len(good)])
    emb = emb.to(store_dtype)
    return {
        "image_emb": emb[:, 0].contiguous(),
        "crop_emb": emb[:, 1:].contiguous(),
        "boxes": boxes,
        "flips": flips,
        "labels": labels,
    }


def extract_features(
    encoder: Any,
    dataset: Any,
    n_samples: int,
    alpha: float,
    beta: float = crops.DEFAULT_BETA,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    num_workers: int = 0,
    shard_size: int = DEFAULT_SHARD_SIZE,
    fidelity: bool = False,
    half: bool = False,
    strategy: str = "random",
    verify: bool = True,
    progress: bool = True,
    on_bad_image: Callable[[int, Exception], None] | None = None,
) -> Features:
    """Embed every image of ``dataset``: its full view and ``n_samples`` crops.

    ``cache_dir``: keep features in resumable safetensors shards there (None: in memory only).
    ``batch_size``: views per encoder call. ``num_workers``: loader processes (0: one
    prefetching thread). ``fidelity``: make views with the model's own preprocessing per crop
    (the authors' way) instead of the fast tensor path. ``half``: store fp16. ``verify``: check
    every cached shard's sha256 before use. ``strategy``: the crop sampler
    (:data:`wca.crops.CROP_STRATEGIES`; ``"random"`` is the paper's). ``on_bad_image``: None
    stops at the first unreadable image (its error is raised); a function ``(index, error)``
    is told of each one instead, and the image is kept as skipped: label :data:`SKIPPED`, zero
    embeddings (:attr:`Features.valid` is False there; a cached shard with skipped images is
    recomputed by a run that does not skip).
    """
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    if batch_size < 1 or shard_size < 1:
        raise ValueError(f"batch_size and shard_size must be >= 1, got {batch_size}, {shard_size}")
    if not 0 < alpha <= beta <= 1:
        raise ValueError(f"need 0 < alpha <= beta <= 1, got alpha={alpha}, beta={beta}")
    num_images = len(dataset)
    if strategy not in crops.CROP_STRATEGIES:
        raise ValueError(
            f"unknown crop strategy {strategy!r} (choose from {', '.join(crops.CROP_STRATEGIES)})"
        )
    if num_images == 0:
        raise ValueError(f"dataset {getattr(dataset, 'name', '')!r} has no images")
    store_dtype = torch.float16 if half else torch.float32
    key = cache_key(encoder, dataset, n_samples, alpha, beta, seed, fidelity, store_dtype, strategy)
    if cache_dir is None:
        cache = None
        ranges = [
            range(lo, min(lo + shard_size, num_images)) for lo in range(0, num_images, shard_size)
        ]
        parts: list[dict[str, Tensor] | None] = [None] * len(ranges)
    else:
        cache = ShardCache(Path(cache_dir), key, num_images, shard_size)
        ranges = [cache.shard_range(s) for s in range(cache.num_shards)]
        parts = [cache.load(s, verify) for s in range(cache.num_shards)]
        if on_bad_image is None:  # a shard that skipped images is not used by a strict run
            parts = [p if p is None or bool((p["labels"] >= 0).all()) else None for p in parts]
    todo = [s for s, part in enumerate(parts) if part is None]

    if todo:
        if fidelity:
            make_views = functools.partial(
                crops.fidelity_views,
                preprocess=encoder.preprocess,
                size=encoder.preprocessing.image_size,
            )
        else:
            # uint8 views travel from the workers; flush() normalises whole batches
            make_views = functools.partial(crops.uint8_views, prep=encoder.preprocessing)
        indices = [i for s in todo for i in ranges[s]]
        items = ViewItems(dataset, indices, make_views, n_samples, alpha, beta, seed, strategy)
        name = getattr(dataset, "name", "images")
        bar = tqdm(
            total=num_images,
            initial=num_images - len(indices),
            unit="img",
            desc=f"features {name}",
            disable=not progress,
        )
        stream = iterate_views(items, num_workers)
        try:
            for shard in todo:
                tensors = _encode_shard(
                    encoder,
                    stream,
                    ranges[shard],
                    n_samples,
                    batch_size,
                    store_dtype,
                    bar,
                    on_bad_image,
                )
                if cache is not None:
                    cache.write_shard(shard, tensors)
                    tensors = cache.load(shard, verify=False)
                    if tensors is None:
                        raise RuntimeError(f"{cache.shard_path(shard)}: unreadable after writing")
                parts[shard] = tensors
        finally:
            bar.close()
            close = getattr(stream, "close", None)
            if close is not None:
                close()
            del stream
    complete = [part for part in parts if part is not None]  # every shard, after the loop
    return assemble(complete, None if cache is None else cache.folder)
