"""The multi-run evaluation protocol over cached features: accuracy, calibration and each
image's correctness per method and run.

Protocols (every run scores every method on every image): :mod:`wca.protocol`.

Methods that do not look at crops are scored once (their runs have std 0) unless they have
several random draws of their text side (WaffleCLIP): run ``r`` then uses draw ``r % n_draws``.
Online methods (a memory across the test stream: ``head.online``) see, in each run, the images
in the order :func:`wca.protocol.stream_order` gives, from an empty memory; per-image methods
do not depend on the order. Accuracies are percentages; std is the population std over runs
(``numpy.std``, as the authors report). Calibration (ECE over 15 equal-width bins of the top-1
confidence, NLL, Brier) is over each head's class probabilities
(:meth:`wca.methods.Head.probabilities`).
Images are scored in chunks, so memory stays bounded at ImageNet size. Images skipped as
unreadable (label -1, ``wca eval --skip-bad-images``) are left out.
"""

from __future__ import annotations

import importlib.metadata
import platform
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from wca import results as schema
from wca.features import Features
from wca.methods import Head
from wca.methods.ragged import counts_of
from wca.passes import ViewCounts
from wca.progress import progress_bar
from wca.protocol import STREAM_ORDER, run_indices, stream_order
from wca.tally import MethodResult, Tally

DEFAULT_CHUNK = 4096  # images scored at once: ~500 MB of fp32 crops at N=60, D=512
RUN_LOGITS_BUDGET = 2**26  # logits values [runs, images, classes] held at once (256 MB fp32)


@dataclass
class Evaluation:
    """Results of :func:`evaluate`, by method in the order the heads were given; ``counts``:
    the crops each scored image read (an adaptive budget's prefixes; None: ``patch_n``)."""

    methods: dict[str, MethodResult]
    n_images: int
    n_run: int
    patch_n: int
    n_crops: int
    seed: int
    protocol: str
    class_subset: list[int] | None = None
    counts: Tensor | None = None

    def views(self, uses_crops: bool) -> ViewCounts:
        """The encoder passes per image of a method: its full view and the crops it read
        (``1 + counts[i]``, or ``1 + patch_n``; 1 without crops)."""
        if not uses_crops:
            return ViewCounts.constant(1, self.n_images)
        if self.counts is None:
            return ViewCounts.constant(1 + self.patch_n, self.n_images)
        return ViewCounts.of(1 + self.counts.numpy())

    def to_schema(self) -> schema.Results:
        online = any(result.online for result in self.methods.values())
        return schema.Results(
            n_images=self.n_images,
            protocol=self.protocol,
            n_run=self.n_run,
            patch_n=self.patch_n,
            n_crops=self.n_crops,
            seed=self.seed,
            class_subset=self.class_subset,
            stream_order=STREAM_ORDER if online else None,
            methods={
                name: result.to_schema(self.views(result.uses_crops))
                for name, result in self.methods.items()
            },
        )




def _scored_runs(
    head: Head,
    image_emb: Tensor,
    crop_emb: Tensor | None,
    indices: Tensor,
    counts: Tensor | None,
    aux: dict[str, Tensor],
) -> Iterator[tuple[list[int], Tensor]]:
    """``(runs, logits [B, C])`` of one per-image head on one chunk of images, for every run.

    A crop head that declares ``pooled_runs`` scores many runs from the whole pool at once
    (``pool_logits``: no per-run copy of the selected crops); otherwise each run's crops are
    gathered and passed to ``logits``. With ``counts`` every run reads each image's own crops.
    ``aux``: ``{"aux_emb": ...}`` for a head that reads a second encoder's views, else empty.
    """
    n_run = len(indices)
    n_draws = max(int(head.n_draws), 1)
    if not head.uses_crops or counts is not None:  # one scoring per draw, shared by its runs
        ragged = {"crop_emb": crop_emb, "counts": counts} if head.uses_crops else {}
        for draw in range(min(n_draws, n_run)):
            logits = head.logits(image_emb, draw=draw, **ragged, **aux)
            yield list(range(draw, n_run, n_draws)), logits
        return
    if head.pooled_runs and n_draws == 1 and not aux:
        first = head.pool_logits(image_emb, crop_emb, indices[:1])
        yield [0], first[0]
        step = max(1, RUN_LOGITS_BUDGET // first[0].numel())
        for start in range(1, n_run, step):
            logits = head.pool_logits(image_emb, crop_emb, indices[start : start + step])
            for offset, run_logits in enumerate(logits):
                yield [start + offset], run_logits
        return
    for run in range(n_run):
        crops = crop_emb.index_select(1, indices[run])
        yield [run], head.logits(image_emb, crops, draw=run % n_draws, **aux)


def evaluate(
    features: Features,
    heads: Mapping[str, Head],
    n_run: int = 20,
    patch_n: int = 60,
    seed: int = 0,
    *,
    protocol: str = "pool",
    class_subset: Sequence[int] | None = None,
    chunk_size: int = DEFAULT_CHUNK,
    logit_scale: float = 100.0,
    progress: bool = False,
    counts: Tensor | None = None,
    aux: Features | None = None,
) -> Evaluation:
    """Score every head on ``features`` over ``n_run`` runs (see the module doc).

    ``class_subset``: the labels predictions are chosen from (ImageNet-A/-R: argmax over their
    200 ImageNet indices of the 1000-class logits); labels are indices of the full class list.
    ``logit_scale``: the model's temperature, for the probabilities of heads that score cosines.
    ``counts [n_images]``: ragged crops, image i's its first ``counts[i]``, read by every run
    (an adaptive budget's prefixes; the result file records them as encoder passes per image).
    ``aux``: the same images by a second image encoder (``aux_model``), whose full views the
    heads that declare ``reads_aux`` get as ``aux_emb``; None: they run without.
    """
    if not heads:
        raise ValueError("no methods to evaluate")
    indices = run_indices(features.n_crops, n_run, patch_n, seed, protocol)
    if aux is not None and not torch.equal(aux.labels, features.labels):
        raise ValueError("aux: the second encoder's features are not of the same images")
    subset = None if class_subset is None else torch.as_tensor(sorted(class_subset))
    valid = features.valid
    if counts is not None:  # by position among the valid images, each read in full
        counts = counts_of(counts, len(features), features.n_crops, read=valid)[valid]
        indices = torch.arange(features.n_crops).expand(n_run, -1)
    labels_all = features.labels.long()[valid]  # skipped images do not count
    count = len(labels_all)
    if count == 0:
        raise ValueError("no images to score: every image was skipped as unreadable")
    if subset is not None and not bool(torch.isin(labels_all, subset).all()):
        raise ValueError("class_subset: some images' labels are not in the subset")
    position_of = torch.cumsum(valid.long(), 0) - 1  # an image's place among the valid ones
    tallies: dict[str, Tally] = {}

    def tally(name: str, runs, logits: Tensor, labels: Tensor, positions: Tensor) -> None:
        if name not in tallies:
            if labels_all.max() >= logits.shape[1]:
                raise ValueError(
                    f"method {name!r} scores {logits.shape[1]} classes but labels go up to "
                    f"{int(labels_all.max())}"
                )
            tallies[name] = Tally(n_run, logits.shape[1], count)
        targets = labels
        if subset is not None:  # choose among the subset's classes
            logits, targets = logits[:, subset], torch.searchsorted(subset, labels)
        probs = heads[name].probabilities(logits.float(), logit_scale)
        if not bool(torch.isfinite(probs).all()):
            raise ValueError(f"method {name!r} gave non-finite scores")
        tallies[name].add(runs, logits, probs, targets, labels, positions)

    per_image = {name: head for name, head in heads.items() if not head.online}
    online = {name: head for name, head in heads.items() if name not in per_image}
    total = len(features) * bool(per_image) + count * n_run * len(online)
    bar = progress_bar(total=total, unit="img", desc="scoring", enabled=progress)
    if per_image:
        needs_crops = any(head.uses_crops for head in per_image.values())
        for start, chunk in features.chunks(chunk_size):
            keep = chunk.valid
            image_emb, labels = chunk.image_emb.float()[keep], chunk.labels.long()[keep]
            crop_emb = chunk.crop_emb.float()[keep] if needs_crops else None
            positions = position_of[start : start + len(chunk)][keep]
            ragged = None if counts is None else counts[positions]
            for name, head in per_image.items():
                extra = _aux_of(head, aux, slice(start, start + len(chunk)), keep)
                scored = _scored_runs(head, image_emb, crop_emb, indices, ragged, extra)
                for runs, logits in scored:
                    tally(name, runs, logits, labels, positions)
            bar.update(len(chunk))
    rows = valid.nonzero().flatten()
    for name, head in online.items():
        for run in range(n_run):
            stream = head.stream(count)
            order = stream_order(count, seed, run)
            for lo in range(0, count, chunk_size):
                positions = order[lo : lo + chunk_size]
                crops = indices[run] if head.uses_crops else None
                image_emb, crop_emb = features.take(rows[positions], crops)
                crop_emb = None if crop_emb is None else crop_emb.float()
                ragged = {} if counts is None or crops is None else {"counts": counts[positions]}
                extra = _aux_of(head, aux, rows[positions])
                logits = stream.logits(image_emb.float(), crop_emb, **ragged, **extra)
                tally(name, [run], logits, labels_all[positions], positions)
                bar.update(len(positions))
    bar.close()
    per_class_total = torch.bincount(
        labels_all, minlength=max(t.per_class.shape[1] for t in tallies.values())
    )
    return Evaluation(
        methods={
            name: tallies[name].result(name, head, count, per_class_total)
            for name, head in heads.items()
        },
        n_images=count,
        n_run=n_run,
        patch_n=patch_n,
        n_crops=features.n_crops,
        seed=seed,
        protocol=protocol,
        class_subset=None if class_subset is None else [int(i) for i in class_subset],
        counts=counts,
    )


def _aux_of(head: Head, aux: Features | None, rows, keep: Tensor | None = None) -> dict:
    """``{"aux_emb": full views [B, D2]}`` of images ``rows`` (``keep`` of them) for a head that
    reads them, else nothing."""
    if aux is None or not head.reads_aux:
        return {}
    aux_emb = aux.image_emb[rows].float()
    return {"aux_emb": aux_emb if keep is None else aux_emb[keep]}


def library_versions() -> dict[str, str | None]:
    """Versions of wca and the libraries that change the numbers, for result files."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for package in ("wca", "torch", "open_clip_torch", "transformers", "safetensors"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def result_file(
    evaluation: Evaluation,
    settings: Mapping[str, Any],
    *,
    dataset: str,
    model: str,
    pretrained: str,
    primary: str | None = None,
) -> schema.ResultFile:
    """The result file of ``evaluation``: clip_benchmark's fields (``metrics`` of the
    ``primary`` method, default ``wca`` if scored, else the first), ours (``metrics_by_method``,
    ``results``), the ``settings`` that made it and the library versions."""
    results = evaluation.to_schema()
    primary = primary or ("wca" if "wca" in results.methods else next(iter(results.methods)))
    if primary not in results.methods:
        raise ValueError(
            f"primary method {primary!r} was not evaluated (methods: {', '.join(results.methods)})"
        )
    by_method = {
        name: schema.metrics_of(method.model_dump(), method.calibration)
        for name, method in results.methods.items()
    }
    return schema.ResultFile(
        dataset=dataset,
        model=model,
        pretrained=pretrained,
        metrics=by_method[primary],
        primary_method=primary,
        metrics_by_method=by_method,
        results=results,
        config=schema.Settings(**settings),
        versions=library_versions(),
    )
