"""The expected tail accuracy (OGA, arXiv 2501.04352): the mean top-1 of the worst 10 % of
runs, which a mean over runs hides; in result files, their tables and ``wca report``."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

TAIL_PERCENT = 10  # the expected tail accuracy's share of runs: the worst 10 %


def expected_tail(runs: Sequence[float]) -> float:
    """The mean of the lowest 10 % of ``runs``: for top-1, OGA's expected tail accuracy
    (arXiv 2501.04352), the mean over the worst 10 % of stream orders or crop draws, which a
    mean over runs hides. The tail holds n / 10 runs, the run at its edge counting in part
    (15 runs: the worst and half the second worst); below 10 runs, it is the worst run
    (:func:`tail_is_worst_run`)."""
    values = np.sort(np.asarray(runs, dtype=np.float64))
    if not len(values):
        raise ValueError("no runs: the tail of nothing")
    whole, rest = divmod(len(values) * TAIL_PERCENT, 100)
    if whole == 0:
        return float(values[0])
    edge = values[whole] * rest / 100 if rest else 0.0
    return float((values[:whole].sum() + edge) * 100 / (len(values) * TAIL_PERCENT))


def tail_is_worst_run(n_runs: int) -> bool:
    """Whether the tail of ``n_runs`` runs is their worst run alone (fewer than 10)."""
    return n_runs * TAIL_PERCENT < 100


def tail_text(value: float, n_runs: int) -> str:
    """A tail accuracy for a table: ``"55.00"``, or ``"55.00 (worst run)"`` below 10 runs."""
    return f"{value:.2f}" + (" (worst run)" if tail_is_worst_run(n_runs) else "")
