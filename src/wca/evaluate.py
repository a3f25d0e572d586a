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
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from wca import results as schema
from wca.correctness import pack_correct
from wca.features import Features
from wca.methods import Head
from wca.methods.ragged import counts_of
from wca.passes import ViewCounts
from wca.progress import progress_bar
from wca.protocol import STREAM_ORDER, run_indices, stream_order

DEFAULT_CHUNK = 4096  # images scored at once: ~500 MB of fp32 crops at N=60, D=512
TOP_K = 5
ECE_BINS = 15
MIN_PROBABILITY = 1e-12  # NLL of probabilities that are exactly zero (ZERO's vote shares)
RUN_LOGITS_BUDGET = 2**26  # logits values [runs, images, classes] held at once (256 MB fp32)


@dataclass
class MethodResult:
    """One method's numbers per run: top-1 and top-5 (%), ECE, NLL, Brier; per-class top-1
    (mean of runs; None for classes without images); top-1 correctness ``bool [runs, images]``
    (None when not tracked)."""

    method: str
    top1: list[float]
    top5: list[float]
    per_class_top1: list[float | None]
    uses_crops: bool
    ece: list[float] = field(default_factory=list)
    nll: list[float] = field(default_factory=list)
    brier: list[float] = field(default_factory=list)
    correct: np.ndarray | None = None
    online: bool = False
    options: dict[str, Any] = field(default_factory=dict)

    @staticmethod
    def _mean_std(values: list[float]) -> tuple[float, float]:
        t = torch.tensor(values, dtype=torch.float64)
        return float(t.mean()), float(t.std(correction=0))

    @property
    def top1_mean_std(self) -> tuple[float, float]:
        return self._mean_std(self.top1)

    @property
    def top5_mean_std(self) -> tuple[float, float]:
        return self._mean_std(self.top5)

    def to_schema(self, views: ViewCounts) -> schema.MethodResult:
        """The method's record in a result file, with its encoder passes per image."""
        calibration = None
        if self.ece:
            calibration = schema.Calibration(
                ece=schema.RunStats.of(self.ece),
                nll=schema.RunStats.of(self.nll),
                brier=schema.RunStats.of(self.brier),
            )
        return schema.MethodResult(
            options=self.options,
            uses_crops=self.uses_crops,
            online=self.online,
            top1=schema.RunStats.of(self.top1, tail=True),
            top5=schema.RunStats.of(self.top5, tail=True),
            per_class_top1=self.per_class_top1,
            calibration=calibration,
            correct=None if self.correct is None else pack_correct(self.correct),
            views=views,
        )


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


class _Tally:
    """Per run: correct counts (top-1, top-5, top-1 per class), calibration sums, and each
    image's top-1 correctness."""

    def __init__(self, n_run: int, num_classes: int, n_images: int) -> None:
        self.top1 = torch.zeros(n_run, dtype=torch.long)
        self.top5 = torch.zeros(n_run, dtype=torch.long)
        self.per_class = torch.zeros(n_run, num_classes, dtype=torch.long)
        self.bins = torch.zeros(n_run, 3, ECE_BINS, dtype=torch.float64)  # count, conf, hits
        self.nll = torch.zeros(n_run, dtype=torch.float64)
        self.brier = torch.zeros(n_run, dtype=torch.float64)
        self.correct = np.zeros((n_run, n_images), dtype=bool)

    def add(
        self,
        runs: Sequence[int],
        logits: Tensor,
        probs: Tensor,
        targets: Tensor,
        labels: Tensor,
        positions: Tensor,
    ) -> None:
        """Scores ``logits`` and probabilities ``probs [B, C]`` of the images ``positions`` (in
        valid-image order) whose classes are ``targets`` among the scored columns (``labels``
        in the full class list)."""
        top = logits.topk(min(TOP_K, logits.shape[1]), dim=1).indices
        hits = top == targets[:, None]
        hit1 = hits[:, 0]
        class_hits = torch.bincount(labels[hit1], minlength=self.per_class.shape[1])
        confidence = probs.gather(1, top[:, :1]).squeeze(1).double()
        bin_of = (confidence * ECE_BINS).long().clamp(0, ECE_BINS - 1)
        true_p = probs.gather(1, targets[:, None]).squeeze(1).double()
        one_hot = torch.nn.functional.one_hot(targets, probs.shape[1]).to(probs.dtype)
        brier = ((probs - one_hot) ** 2).sum(1).double().sum()
        nll = -true_p.clamp_min(MIN_PROBABILITY).log().sum()
        weights = (None, confidence, hit1.double())  # per bin: count, confidence, hits
        sums = torch.stack([torch.bincount(bin_of, w, ECE_BINS).double() for w in weights])
        for run in runs:
            self.top1[run] += int(hit1.sum())
            self.top5[run] += int(hits.any(dim=1).sum())
            self.per_class[run] += class_hits
            self.bins[run] += sums
            self.nll[run] += nll
            self.brier[run] += brier
            self.correct[run, positions.numpy()] = hit1.numpy()

    def result(self, name: str, head: Head, count: int, per_class_total: Tensor) -> MethodResult:
        totals = per_class_total[: self.per_class.shape[1]]
        per_class = (self.per_class.double().mean(0) / totals.clamp(min=1) * 100).tolist()
        count_b, confidence_b, hits_b = self.bins.unbind(1)
        ece = ((confidence_b - hits_b).abs().sum(1) / count).tolist()
        return MethodResult(
            method=name,
            top1=(self.top1.double() / count * 100).tolist(),
            top5=(self.top5.double() / count * 100).tolist(),
            per_class_top1=[
                value if total else None
                for value, total in zip(per_class, totals.tolist(), strict=True)
            ],
            uses_crops=bool(head.uses_crops),
            ece=ece,
            nll=(self.nll / count).tolist(),
            brier=(self.brier / count).tolist(),
            correct=self.correct,
            online=head.online,
        )


def _scored_runs(
    head: Head, image_emb: Tensor, crop_emb: Tensor | None, indices: Tensor, counts: Tensor | None
) -> Iterator[tuple[list[int], Tensor]]:
    """``(runs, logits [B, C])`` of one per-image head on one chunk of images, for every run.

    A crop head that declares ``pooled_runs`` scores many runs from the whole pool at once
    (``pool_logits``: no per-run copy of the selected crops); otherwise each run's crops are
    gathered and passed to ``logits``. With ``counts`` every run reads each image's own crops.
    """
    n_run = len(indices)
    n_draws = max(int(head.n_draws), 1)
    if not head.uses_crops or counts is not None:  # one scoring per draw, shared by its runs
        ragged = {"crop_emb": crop_emb, "counts": counts} if head.uses_crops else {}
        for draw in range(min(n_draws, n_run)):
            yield list(range(draw, n_run, n_draws)), head.logits(image_emb, draw=draw, **ragged)
        return
    if head.pooled_runs and n_draws == 1:
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
        yield [run], head.logits(image_emb, crops, draw=run % n_draws)


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
) -> Evaluation:
    """Score every head on ``features`` over ``n_run`` runs (see the module doc).

    ``class_subset``: the labels predictions are chosen from (ImageNet-A/-R: argmax over their
    200 ImageNet indices of the 1000-class logits); labels are indices of the full class list.
    ``logit_scale``: the model's temperature, for the probabilities of heads that score cosines.
    ``counts [n_images]``: ragged crops, image i's its first ``counts[i]``, read by every run
    (an adaptive budget's prefixes; the result file records them as encoder passes per image).
    """
    if not heads:
        raise ValueError("no methods to evaluate")
    indices = run_indices(features.n_crops, n_run, patch_n, seed, protocol)
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
    tallies: dict[str, _Tally] = {}

    def tally(name: str, runs, logits: Tensor, labels: Tensor, positions: Tensor) -> None:
        if name not in tallies:
            if labels_all.max() >= logits.shape[1]:
                raise ValueError(
                    f"method {name!r} scores {logits.shape[1]} classes but labels go up to "
                    f"{int(labels_all.max())}"
                )
            tallies[name] = _Tally(n_run, logits.shape[1], count)
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
                for runs, logits in _scored_runs(head, image_emb, crop_emb, indices, ragged):
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
                logits = stream.logits(image_emb.float(), crop_emb, **ragged)
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
