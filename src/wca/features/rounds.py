"""Adaptive extraction: images read their crops in rounds until the stopping head settles them.

One home for the loop that feature extraction (:mod:`wca.features.extract`) and the classifier
(:mod:`wca.classifier`) both run. Every image starts with its full view and ``min_crops``
crops; after each of its rounds the :class:`~wca.features.judge.StoppingHead` scores it on
every crop it read and either closes it or queues its next ``crops_per_round`` crops. An
image's crops are its fixed spec's boxes (``CropSpec(n_crops=max_crops).views``) in order, so
what it reads is a prefix of the fixed crops, and their embeddings equal the fixed ones' first
k (the encoder sees the same views).

Views of all the images in flight are packed into encoder calls of exactly ``batch_size``
(:class:`~wca.features.views.ViewBatcher`): new images are admitted while fewer than two
batches of views wait, so an image's next round fills the batch beside other images' first
rounds, and only the calls after the last image was admitted can be short. Views are cut in
threads ahead of the encoder (``cut_threads``) while it runs; the batches depend only on the
images, the budget and ``batch_size``, never on timing, so a run repeats its batches exactly.

Embeddings an image already has (``known``: a prefix stored by an earlier run) are not encoded
again: a round reads them and encodes only the crops past them.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from wca.deferred import torch
from wca.features.judge import StoppingHead, history_of
from wca.features.views import ViewBatcher

if TYPE_CHECKING:
    from torch import Tensor

# cut(pixels, boxes [n, 4], flips [n], full) -> views [n (+1 with the full view first), ...]
Cut = Callable[[Any, "Tensor", "Tensor", bool], "Tensor"]
LOOKAHEAD_BATCHES = 2  # encoder batches of views kept waiting (admitting new images)


def whole_image(image: Any, boxes: Tensor, flips: Tensor | None = None) -> Any:
    """A loader's views for rounds that cut later (fidelity views): the image itself."""
    return image


@dataclass
class Source:
    """One image to read: ``key`` (handed back with its embeddings), ``pixels`` (what the cut
    reads; None when ``known`` must do), the boxes ``[N, 4]`` and flips ``[N]`` of its fixed
    spec, and ``known`` embeddings ``[1 + m, D]`` (full view first) from an earlier run."""

    key: Any
    pixels: Any
    boxes: Tensor
    flips: Tensor
    known: Tensor | None = None


@dataclass
class _Open:
    """An image being read: its embeddings so far (full view first) and its head's scores
    after each round."""

    source: Source
    parts: list[Tensor] = field(default_factory=list)
    history: list[Tensor] = field(default_factory=list)
    round: int = 0

    def embeddings(self) -> Tensor:
        return torch.cat(self.parts) if len(self.parts) > 1 else self.parts[0]


def read_in_rounds(
    sources: Iterable[Source],
    stopping: StoppingHead,
    encode: Callable[[Tensor], Tensor] | None,
    batch_size: int,
    cut: Cut | None,
    cut_threads: int = 1,
) -> Iterator[tuple[Any, Tensor | None]]:
    """``(key, embeddings [1 + k, D])`` of every image as it is settled (not in input order),
    k the crops it read. With ``encode`` None (judge stored embeddings alone), an image that
    needs more crops than it ``known`` gives ``(key, None)``. See the module doc."""
    bounds = (0, *stopping.budget.rounds())
    ready: deque[_Open] = deque()  # images whose round is complete, to judge
    pending: deque[tuple[_Open, Future]] = deque()  # views being cut, in encoding order
    waiting = 0  # views in ``pending``
    batcher = None if encode is None else ViewBatcher(encode, batch_size)
    lookahead = LOOKAHEAD_BATCHES * batch_size
    stream = iter(sources)
    exhausted = False
    needs_encoder: list[Any] = []

    with ThreadPoolExecutor(max(1, cut_threads), thread_name_prefix="wca-cut") as cutter:

        def schedule(image: _Open) -> None:
            """Queue the views of the image's next round (the crops past its ``known``)."""
            nonlocal waiting
            source, lo, hi = image.source, bounds[image.round], bounds[image.round + 1]
            known = 0 if source.known is None else len(source.known) - 1
            full = source.known is None and image.round == 0
            if source.known is not None:
                if image.round == 0:
                    image.parts.append(source.known[:1])
                if lo < known:
                    image.parts.append(source.known[1 + lo : 1 + min(hi, known)])
            first = max(lo, known)
            if first >= hi and not full:
                ready.append(image)
                return
            if batcher is None or cut is None:
                needs_encoder.append(source.key)
                return
            views = cutter.submit(
                cut, source.pixels, source.boxes[first:hi], source.flips[first:hi], full
            )
            pending.append((image, views))
            waiting += hi - first + int(full)

        def judge() -> Iterator[tuple[Any, Tensor]]:
            """Score the ready images (those of one round at once) and close the settled."""
            while ready:
                round_ = ready[0].round
                group = [image for image in ready if image.round == round_]
                rest = [image for image in ready if image.round != round_]
                ready.clear()
                ready.extend(rest)
                embeddings = torch.stack([image.embeddings() for image in group])
                image_emb, crop_emb = embeddings[:, 0], embeddings[:, 1:]
                scores = stopping.scores(image_emb, crop_emb)
                for image, row in zip(group, scores, strict=True):
                    image.history.append(row)
                history = history_of([image.history for image in group])
                settled = stopping.settled(image_emb, crop_emb, history, round_ + 1).tolist()
                for image, done in zip(group, settled, strict=True):
                    if done:
                        yield image.source.key, image.embeddings()
                    else:
                        image.round += 1
                        schedule(image)

        while True:
            while not exhausted and waiting + (batcher.queued if batcher else 0) < lookahead:
                source = next(stream, None)
                if source is None:
                    exhausted = True
                else:
                    schedule(_Open(source))
            yield from ((key, None) for key in needs_encoder)
            needs_encoder.clear()
            if ready:
                yield from judge()
                continue
            if pending:
                image, views = pending.popleft()
                views = views.result()
                waiting -= len(views)
                done = batcher.add(image, views)
            elif batcher is not None and batcher.queued:
                done = batcher.flush()
            elif exhausted:
                return
            else:
                continue
            for image, embeddings in done:
                image.parts.append(embeddings)
                ready.append(image)
