"""The view pipeline: decode each image once, cut its views, and hand them to the encoder loop
in order, from one prefetching thread (``num_workers == 0``) or loader worker processes.

Boxes and flips come from :func:`wca.crops.crop_views` keyed on ``(seed, image index)``, so the
numbers do not depend on batching, worker count or which shards a run happens to compute. At
most a bounded number of images is in flight.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor

from wca import crops

PREFETCH_IMAGES = 4  # images decoded ahead of the encoder by the prefetching thread
WORKER_PREFETCH = 2  # images decoded ahead per loader worker


class ViewItems(torch.utils.data.Dataset):
    """Image ``indices[j]`` of ``dataset`` -> ``(index, views [N+1,3,S,S], boxes, flips,
    label)``; ``make_views(image, boxes, flips=flips)``."""

    def __init__(
        self,
        dataset: Any,
        indices: Sequence[int],
        make_views: Callable[[Any, Tensor, Tensor], Tensor],
        n_samples: int,
        alpha: float,
        beta: float,
        seed: int,
        strategy: str,
    ) -> None:
        self.dataset = dataset
        self.indices = list(indices)
        self.make_views = make_views
        self.box_args = (n_samples, alpha, beta, seed, strategy)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(
        self, j: int
    ) -> tuple[int, Tensor, Tensor, Tensor, int] | tuple[int, Exception]:
        """The image's views, or ``(index, error)`` when it cannot be read: the error travels
        to the main process as it is (a loader worker would wrap it in a multi-line report)."""
        index = self.indices[j]
        try:
            image, label = self.dataset[index]
            n, alpha, beta, seed, strategy = self.box_args
            boxes, flips = crops.crop_views(
                image.height, image.width, n, alpha, beta, seed, index, strategy
            )
            return index, self.make_views(image, boxes, flips=flips), boxes, flips, int(label)
        except Exception as error:  # re-raised by the consumer
            return index, error


def _prefetch(items: Sequence[Any], depth: int) -> Iterator[Any]:
    """Iterate ``items`` (lazily computed by ``__getitem__``) one step ahead in a thread, at
    most ``depth`` items queued; errors in the thread surface in the caller."""
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
            for j in range(len(items)):
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
    items: ViewItems, num_workers: int
) -> Iterator[tuple[int, Tensor, Tensor, Tensor, int]]:
    if num_workers <= 0:
        return _prefetch(items, PREFETCH_IMAGES)
    loader = torch.utils.data.DataLoader(
        items,
        batch_size=None,
        shuffle=False,
        num_workers=num_workers,
        prefetch_factor=WORKER_PREFETCH,
    )
    return iter(loader)


