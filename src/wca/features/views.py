"""The view pipeline: decode each image once, cut its views, hand them on in order (from one
prefetching thread, ``num_workers == 0``, or loader worker processes), and pack the views of
consecutive images into encoder batches (:class:`ViewBatcher`). Feature extraction and the
classifier's ``predict`` both run on it.

Boxes and flips come from a :class:`~wca.crops.CropSpec` keyed on each image's key (its index
in a dataset, or a hash of its pixels for the classifier), so the numbers do not depend on
batching, worker count or which shards a run happens to compute. At most a bounded number of
images is in flight.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from wca import preprocessing
from wca.checks import require_finite
from wca.crops import CropSpec
from wca.features.identity import FileVersion

PREFETCH_IMAGES = 4  # images decoded ahead of the encoder by the prefetching thread
WORKER_PREFETCH = 2  # images decoded ahead per loader worker


@dataclass
class ImageViews:
    """One image's views ``[N+1, 3, S, S]`` (full view first; ``uint8`` on the fast path, the
    decoded image alone when views are cut on the device), its crop boxes and flips, and the
    version of its file when asked for (the feature cache records it)."""

    index: int
    views: Tensor
    boxes: Tensor
    flips: Tensor
    label: int
    size: tuple[int, int]  # (width, height)
    version: FileVersion | None = None


@dataclass
class BadImage:
    """An image that could not be read; the error travels to the consumer as it is (a loader
    worker would wrap it in a multi-line report)."""

    index: int
    error: Exception
    version: FileVersion | None = None


class ViewItems(torch.utils.data.Dataset):
    """Image ``indices[j]`` of ``dataset`` (``dataset[i] -> (PIL image, label)``) as
    :class:`ImageViews` or :class:`BadImage`; ``make_views(image, boxes, flips=flips)``.
    ``key(index, image)`` keys the image's crops (default: its index). ``version(index)``: the
    version of the image's file, read just before the image is decoded."""

    def __init__(
        self,
        dataset: Any,
        indices: Sequence[int],
        make_views: Callable[..., Tensor],
        crops_spec: CropSpec,
        key: Callable[[int, Any], int] | None = None,
        version: Callable[[int], FileVersion | None] | None = None,
    ) -> None:
        self.dataset = dataset
        self.indices = indices if isinstance(indices, range) else list(indices)
        self.make_views = make_views
        self.spec = crops_spec
        self.key = key
        self.version = version

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, j: int) -> ImageViews | BadImage:
        index = self.indices[j]
        version = None if self.version is None else self.version(index)
        try:
            image, label = self.dataset[index]
            key = index if self.key is None else self.key(index, image)
            boxes, flips = self.spec.views(image.height, image.width, key)
            views = self.make_views(image, boxes, flips=flips)
            return ImageViews(index, views, boxes, flips, int(label), image.size, version)
        except Exception as error:  # re-raised or reported by the consumer
            return BadImage(index, error, version)


def _prefetch(items: Sequence[Any], depth: int, order: Iterable[int]) -> Iterator[Any]:
    """Iterate ``items[j]`` for ``j`` in ``order`` (lazily computed by ``__getitem__``) ahead in
    a thread, at most ``depth`` items queued; errors in the thread surface in the caller."""
    slots: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(entry: tuple[str, Any]) -> bool:
        while not stop.is_set():
            try:
                slots.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for j in order:
                if not put(("item", items[j])):
                    return
            put(("end", None))
        except BaseException as error:  # handed to the consumer, which re-raises it
            put(("error", error))

    thread = threading.Thread(target=work, name="wca-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = slots.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()
        thread.join(timeout=5)


def iterate_views(
    items: ViewItems, num_workers: int, order: Iterable[int] | None = None
) -> Iterator[ImageViews | BadImage]:
    """The items in order (or ``items[j]`` for ``j`` in ``order``, an iterable read as the
    pipeline goes, a few images ahead), made by one prefetching thread (``num_workers`` 0) or
    by loader worker processes."""
    order = range(len(items)) if order is None else order
    if num_workers <= 0:
        return _prefetch(items, PREFETCH_IMAGES, order)
    loader = torch.utils.data.DataLoader(
        items,
        batch_size=None,
        sampler=order,
        shuffle=False,
        num_workers=num_workers,
        prefetch_factor=WORKER_PREFETCH,
    )
    return iter(loader)


def encode_views(encoder: Any, views: Tensor) -> Tensor:
    """Embeddings ``[V, D]`` of views ``[V, 3, S, S]``; ``uint8`` views are normalised where the
    encoder runs (4x fewer bytes moved). Non-finite embeddings raise, naming the model."""
    if views.dtype == torch.uint8:
        views = views.to(encoder.device, non_blocking=True)
        views = preprocessing.normalize_pixels(views, encoder.preprocessing)
    with torch.inference_mode():
        emb = encoder.encode_images(views)
    if emb.shape != (len(views), encoder.embed_dim):
        raise ValueError(f"encoder returned {tuple(emb.shape)} for {len(views)} views")
    return require_finite(emb, getattr(encoder, "name", "the encoder"))


class ViewBatcher:
    """Views of consecutive images packed into encoder calls of exactly ``batch_size`` views
    (an image's views may straddle two calls); each image comes out, in order, once all its
    views are encoded. ``add`` and ``flush`` return the completed ``(item, embeddings [V, D])``.

    One batcher serves a run of images whose batches must not depend on what came before:
    feature extraction uses one per shard, so a resumed run repeats exactly the same batches.
    """

    def __init__(self, encode: Callable[[Tensor], Tensor], batch_size: int) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.encode, self.batch_size = encode, batch_size
        self.items: list[tuple[Any, int]] = []  # (item, number of views) not yet returned
        self.views: list[Tensor] = []  # views not yet encoded
        self.queued = 0
        self.embeddings: list[Tensor] = []  # of the pending items' views encoded so far
        self.encoded = 0

    def add(self, item: Any, views: Tensor) -> list[tuple[Any, Tensor]]:
        self.items.append((item, len(views)))
        self.views.append(views)
        self.queued += len(views)
        while self.queued >= self.batch_size:
            self._encode(self.batch_size)
        return self._complete()

    def flush(self) -> list[tuple[Any, Tensor]]:
        """Encode what is queued (a short last batch) and return every pending item."""
        if self.queued:
            self._encode(self.queued)
        return self._complete()

    def _encode(self, count: int) -> None:
        views = torch.cat(self.views) if len(self.views) > 1 else self.views[0]
        self.embeddings.append(self.encode(views[:count]))
        rest = views[count:]
        self.views, self.queued = ([rest] if len(rest) else []), len(rest)
        self.encoded += count

    def _complete(self) -> list[tuple[Any, Tensor]]:
        done, used = [], 0
        for item, count in self.items:
            if used + count > self.encoded:
                break
            done.append((item, used, count))
            used += count
        if not done:
            return []
        embeddings = torch.cat(self.embeddings) if len(self.embeddings) > 1 else self.embeddings[0]
        self.embeddings = [embeddings[used:]]
        self.encoded -= used
        self.items = self.items[len(done) :]
        return [(item, embeddings[start : start + count]) for item, start, count in done]
