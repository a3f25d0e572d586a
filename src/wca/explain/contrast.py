"""Where the evidence is: the crops covering a place against the crops that do not.

For crops i = 1..N with masks m_i(p) (1 where crop i covers the map cell p) and values x_i (a
crop's cosine to one description, or to the full view), the evidence at p is the difference of
means

    d(p) = mean_{i: m_i(p) = 1} x_i  -  mean_{i: m_i(p) = 0} x_i,

the slope of the least-squares fit x_i ~ a + d m_i(p) with an intercept (the fit of
randomized-input-sampling explanations, RISE). Unlike the mean over the covering crops, it
cancels coverage: equal values give d = 0 everywhere, however many crops cover each cell. The
fit's residuals give its noise, se(p) = s sqrt(1/n_1 + 1/n_0) with s^2 the variance left within
the two groups, and t(p) = d(p) / se(p) is the evidence in units of that noise: a cell seen by
few crops (the image border) needs a larger difference to stand out.

A map is *localized* when its largest |t| exceeds what the same values reach when dealt out to
the crops at random: the ``level`` quantile (95 %) of the largest |t| over ``draws`` random
permutations of the values across the crops (a permutation test, robust to the values'
distribution: one outlying crop is no evidence of a place, many crops over one place are).
Otherwise it shows no localized evidence.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

DRAWS = 200  # random deals of the values for the noise level
LEVEL = 0.95  # the quantile of the noise's largest |t| that localized evidence must exceed


@dataclass
class Contrast:
    """Evidence maps of K value sets over one crop set, on a grid of ``[h, w]`` cells.

    ``difference`` is d (in the values' units, e.g. cosine), ``t`` is d over its standard
    error; both are NaN where every crop or none covers the cell. ``noise`` is, per map, the
    largest |t| its values reach dealt out at random (the ``level`` quantile), and
    ``localized`` says which maps exceed it."""

    difference: Tensor  # [K, h, w]
    t: Tensor  # [K, h, w]
    noise: Tensor  # [K]
    localized: Tensor  # bool [K]

    def peak(self, k: int) -> tuple[int, int]:
        """The cell ``(row, column)`` of map ``k``'s largest t (the strongest evidence)."""
        flat = torch.nan_to_num(self.t[k], nan=-torch.inf).flatten()
        row, column = divmod(int(flat.argmax()), self.t.shape[-1])
        return row, column


def cover_masks(boxes: Tensor, size: tuple[int, int], grid: tuple[int, int]) -> Tensor:
    """Which crop covers which cell: bool ``[N, h, w]`` for crop ``boxes [N, 4]`` (left, top,
    right, bottom in pixels) on an image of ``size = (width, height)``, on a ``grid = (w, h)``
    of cells laid over it; a cell is covered when its centre lies in the box."""
    (width, height), (columns, rows) = size, grid
    x = (torch.arange(columns, dtype=torch.float64) + 0.5) * (width / columns)
    y = (torch.arange(rows, dtype=torch.float64) + 0.5) * (height / rows)
    left, top, right, bottom = boxes.double().T
    inside_x = (x[None] >= left[:, None]) & (x[None] < right[:, None])
    inside_y = (y[None] >= top[:, None]) & (y[None] < bottom[:, None])
    return inside_y[:, :, None] & inside_x[:, None, :]


class TooFewCrops(ValueError):
    """Too few crops to contrast (an image of a pixel or two has one window)."""


def contrast(
    masks: Tensor, values: Tensor, draws: int = DRAWS, level: float = LEVEL, seed: int = 0
) -> Contrast:
    """Evidence maps of ``values [K, N]`` (K value sets over the same N crops) on the cells of
    ``masks [N, h, w]`` (:func:`cover_masks`), with each map's noise level from ``draws``
    random deals of its values (seeded: the same inputs give the same answer)."""
    if masks.ndim != 3 or values.ndim != 2 or values.shape[1] != masks.shape[0]:
        raise ValueError(
            f"masks must be [N, h, w] and values [K, N], got {list(masks.shape)} and "
            f"{list(values.shape)}"
        )
    count, rows, columns = masks.shape
    if count < 3:
        raise TooFewCrops(f"a contrast needs at least 3 crops, got {count}")
    if not torch.isfinite(values).all():
        raise ValueError("values must be finite")
    # cells covered by the same crops share every number: fit each coverage pattern once
    patterns, cell = torch.unique(masks.reshape(count, -1), dim=1, return_inverse=True)
    patterns, values = patterns.double(), values.double()
    difference, t = _fit(patterns, values)
    generator = torch.Generator().manual_seed(seed)
    order = torch.rand(draws, *values.shape, generator=generator).argsort(dim=-1)
    dealt = values.expand(draws, *values.shape).gather(2, order).flatten(0, 1)
    _, chance = _fit(patterns, dealt)
    largest = chance.abs().nan_to_num(0).amax(dim=-1).view(draws, len(values))
    noise = torch.quantile(largest, level, dim=0)
    shape = (len(values), rows, columns)
    return Contrast(
        difference[:, cell].reshape(shape).float(),
        t[:, cell].reshape(shape).float(),
        noise.float(),
        t.abs().nan_to_num(0).amax(dim=-1) > noise,
    )


def _fit(patterns: Tensor, values: Tensor) -> tuple[Tensor, Tensor]:
    """d and t ``[K, P]`` of ``values [K, N]`` on the coverage ``patterns [N, P]``."""
    count = patterns.shape[0]
    covered = patterns.sum(0)  # n_1 per pattern
    others = count - covered  # n_0
    inside = values @ patterns
    total = values.sum(-1, keepdim=True)
    mean_in = inside / covered.clamp(min=1)
    mean_out = (total - inside) / others.clamp(min=1)
    difference = mean_in - mean_out
    residual = (values**2).sum(-1, keepdim=True) - covered * mean_in**2 - others * mean_out**2
    variance = (residual / (count - 2)).clamp(min=0)
    # a floor far below any real spread, far above rounding: equal values give t ~ 0 (not
    # localized), an exact fit of different values a huge t
    floor = 1e-9 * values.abs().amax(-1, keepdim=True) + 1e-300
    spread = (variance * (1 / covered.clamp(min=1) + 1 / others.clamp(min=1))).sqrt()
    t = difference / torch.maximum(spread, floor)
    undefined = (covered == 0) | (others == 0)
    return difference.masked_fill(undefined, torch.nan), t.masked_fill(undefined, torch.nan)
