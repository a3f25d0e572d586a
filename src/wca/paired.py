"""Paired comparison of two methods scored on the same images: the top-1 difference and a
seeded bootstrap interval over images.

Each image's correctness is first averaged over the runs (a method with crops is right on an
image in some runs and not in others), so the unit resampled is the image, the source of
sampling error a reader cares about: another test set of the same size. Resampling the same
images for both methods (paired) removes the images' shared difficulty from the interval.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RESAMPLES = 1000
LEVEL = 0.95
SEED = 0
BLOCK = 2**22  # resampled image indices held at once (32 MB of int64)


@dataclass(frozen=True)
class PairedDifference:
    """Top-1 of a method minus a baseline's, in percentage points, with the bootstrap interval
    ``[low, high]`` at ``level``."""

    diff: float
    low: float
    high: float
    level: float = LEVEL
    resamples: int = RESAMPLES

    @property
    def excludes_zero(self) -> bool:
        """Whether the interval lies wholly on one side of 0."""
        return self.low > 0 or self.high < 0


def per_image(correct: np.ndarray) -> np.ndarray:
    """Top-1 correctness ``bool [runs, images]`` -> each image's share of correct runs."""
    return np.asarray(correct, dtype=np.float64).mean(axis=0)


def paired_bootstrap(
    method: np.ndarray,
    baseline: np.ndarray,
    *,
    resamples: int = RESAMPLES,
    level: float = LEVEL,
    seed: int = SEED,
) -> PairedDifference:
    """The difference of the means of two per-image scores in [0, 1] (the same images in the
    same order) with a percentile interval from ``resamples`` bootstrap resamples of the
    images, drawn from ``numpy.random.default_rng(seed)``: the same seed resamples the same
    images for every method compared with one baseline."""
    method, baseline = np.asarray(method, np.float64), np.asarray(baseline, np.float64)
    if method.shape != baseline.shape or method.ndim != 1 or len(method) == 0:
        raise ValueError(
            f"paired scores need the same non-empty images, got {method.shape} and {baseline.shape}"
        )
    if not 0 < level < 1 or resamples < 1:
        raise ValueError(f"level must be in (0, 1) and resamples >= 1, got {level}, {resamples}")
    difference = method - baseline
    n = len(difference)
    rng = np.random.default_rng(seed)
    per_block = max(1, BLOCK // n)
    means = [
        difference[rng.integers(0, n, size=(min(per_block, resamples - start), n))].mean(axis=1)
        for start in range(0, resamples, per_block)
    ]
    low, high = np.quantile(np.concatenate(means), [(1 - level) / 2, (1 + level) / 2])
    return PairedDifference(
        100 * float(difference.mean()), 100 * float(low), 100 * float(high), level, resamples
    )
