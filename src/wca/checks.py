"""Checks of what a model gives back: non-finite embeddings or scores (corrupt weights, an fp16
overflow) would give a uniform, meaningless answer, so they stop the run with one line."""

from __future__ import annotations

import torch
from torch import Tensor


def require_finite(values: Tensor, model: str, what: str = "image") -> Tensor:
    """``values`` if every entry is finite, else an error naming the model: NaN or inf
    embeddings (corrupt weights, an fp16 overflow) would give a uniform, meaningless answer.
    One reduction per batch, negligible beside the forward pass."""
    if not bool(torch.isfinite(values).all()):
        bad = int((~torch.isfinite(values)).any(dim=-1).sum()) if values.ndim > 1 else 1
        raise ValueError(
            f"{model}: the model produced non-finite (NaN/inf) {what} values for {bad} of "
            f"{len(values) if values.ndim else 1} inputs; its weights are probably corrupt "
            "(or overflow at this precision: try precision fp32)"
        )
    return values
