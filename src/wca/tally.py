"""One method's numbers over the runs of an evaluation (:mod:`wca.evaluate`): the counts of
each run (:class:`Tally`: top-1, top-5, per class, the calibration sums, each image's
correctness) and what they come to (:class:`MethodResult`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from wca import results as schema
from wca.correctness import pack_correct
from wca.passes import ViewCounts

if TYPE_CHECKING:
    from wca.methods import Head

TOP_K = 5
ECE_BINS = 15
MIN_PROBABILITY = 1e-12  # NLL of probabilities that are exactly zero (ZERO's vote shares)


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



class Tally:
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
