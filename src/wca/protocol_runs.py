"""The runs of the multi-run protocol under either crop budget.

Under the fixed budget run r draws ``patch_n`` of each image's pooled crops
(:func:`wca.evaluate.evaluate`). Under the adaptive budget an image reads a prefix of its crops,
as many as its rule lets it, so the runs differ by their crop seed instead: run r reads every
image's adaptive prefix of the crops of seed ``seed + r`` (a feature pass of its own, with its
own prefix store) and is scored as one run with seed ``seed + r`` (an online method's stream
order too). The runs are gathered into one :class:`wca.evaluate.Evaluation` of ``n_run`` runs:
each run's numbers, each image's correctness per run, and the crops each image read in every run
(the views record counts every image of every run).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from wca.config import EvalConfig
from wca.evaluate import Evaluation, MethodResult
from wca.features import Features

RUN_LISTS = ("top1", "top5", "ece", "nll", "brier")


def protocol_runs(
    config: EvalConfig,
    features: Features,
    features_of_seed: Callable[[int], Features],
    score: Callable[[Features, int, int], Evaluation],
) -> Evaluation:
    """``config.n_run`` runs (see the module doc): ``score(features, n_run, seed)`` once on
    ``features`` under the fixed budget; under the adaptive one, once per run with a single run
    on the features of seed ``config.seed + r`` (``features`` for r = 0, else
    ``features_of_seed``)."""
    if not config.budget.adaptive:
        return score(features, config.n_run, config.seed)
    runs = [score(features, 1, config.seed)]
    for run in range(1, config.n_run):
        seed = config.seed + run
        runs.append(score(features_of_seed(seed), 1, seed))
    return gathered(runs)


def gathered(runs: list[Evaluation]) -> Evaluation:
    """One-run evaluations of the same images and methods as one evaluation of their runs."""
    first = runs[0]
    methods = {}
    for name, result in first.methods.items():
        each = [evaluation.methods[name] for evaluation in runs]
        lists: dict[str, Any] = {
            key: [v for r in each for v in getattr(r, key)] for key in RUN_LISTS
        }
        correct = None if result.correct is None else np.concatenate([r.correct for r in each])
        methods[name] = replace(
            result, **lists, per_class_top1=_per_class_mean(each), correct=correct
        )
    counts = None
    if all(evaluation.counts is not None for evaluation in runs):
        counts = torch.cat([evaluation.counts for evaluation in runs])
    return replace(first, methods=methods, n_run=len(runs), counts=counts)


def _per_class_mean(results: list[MethodResult]) -> list[float | None]:
    """Per class, the mean over runs of its top-1 (None for a class without images)."""
    columns = zip(*(result.per_class_top1 for result in results), strict=True)
    return [None if None in column else float(np.mean(column)) for column in columns]
