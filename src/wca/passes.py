"""Encoder passes per image, as a result file records them: what a method's accuracy cost.

An image read through its full view and ``k`` crops costs ``1 + k`` passes of the image
encoder. A fixed budget reads the same ``1 + N`` for every image (``N``: the crops per run), a
method without crops 1; an adaptive budget reads each image's own prefix of its crops, so its
cost is a distribution, summed up here by its mean, quantiles, extremes and histogram so that
"the same accuracy at a quarter of the passes" reads off one row of ``wca report``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

QUANTILES = (10, 50, 90)  # percent; numpy's linear interpolation between images


class ViewCounts(BaseModel):
    """Encoder passes per image over a result's scored images (of every run where the runs read
    other crops, as the adaptive budget's crop seeds do): the mean, the ``quantiles``
    (``{percent: passes}``), the fewest and most, and the ``histogram`` (``{passes: images}``,
    ascending), which holds them all: files of one setting pool by their histograms."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    mean: float
    min: int
    max: int
    quantiles: dict[int, float]
    histogram: dict[int, int] = Field(min_length=1)

    @model_validator(mode="after")
    def _counts_are_images(self) -> ViewCounts:
        """A histogram of at least one pass per image and at least one image per entry."""
        if min(self.histogram) < 1 or min(self.histogram.values()) < 1:
            raise ValueError("histogram: passes and images must be >= 1")
        return self

    @classmethod
    def of(cls, passes: Sequence[int] | np.ndarray) -> ViewCounts:
        """The summary of ``passes [n_images]`` (each image's encoder passes, its full view
        included)."""
        values = np.sort(np.asarray(passes, dtype=np.int64).reshape(-1))
        if not len(values):
            raise ValueError("no images: encoder passes of nothing")
        if values[0] < 1:
            raise ValueError(f"encoder passes per image must be >= 1, got {int(values[0])}")
        passes_seen, images = np.unique(values, return_counts=True)
        return cls(
            mean=float(values.mean()),
            min=int(values[0]),
            max=int(values[-1]),
            quantiles={
                q: float(v)
                for q, v in zip(QUANTILES, np.percentile(values, QUANTILES), strict=True)
            },
            histogram=dict(zip(map(int, passes_seen), map(int, images), strict=True)),
        )

    @classmethod
    def constant(cls, passes: int, n_images: int) -> ViewCounts:
        """``n_images`` images read through ``passes`` passes each (a fixed budget)."""
        return cls.of(np.full(n_images, passes))

    @classmethod
    def pooled(cls, records: Iterable[ViewCounts]) -> ViewCounts:
        """The summary of the images of every record together."""
        return cls.of(np.concatenate([record.per_image() for record in records]))

    @property
    def n_images(self) -> int:
        return sum(self.histogram.values())

    def per_image(self) -> np.ndarray:
        """The passes of every image, ascending (the histogram spelt out)."""
        return np.repeat(list(self.histogram), list(self.histogram.values()))
