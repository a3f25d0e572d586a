"""The Gaussian discriminant that DOTA and OGA share: class means with one shared covariance
score an image by its log-likelihood under each class, up to a term common to all classes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import Tensor


@dataclass
class Discriminant:
    """x Lambda mu_c - mu_c Lambda mu_c / 2 for class means mu ``[C, D]`` and the shared
    precision Lambda ``[D, D]`` (symmetric): log N(x; mu_c, Lambda^-1) + x Lambda x / 2 + a
    constant, the authors' ``W = Lambda M`` and ``c`` (DOTA) or ``W`` and ``b`` (OGA)."""

    weights: Tensor  # [C, D]: mu Lambda
    bias: Tensor  # [C]: -mu Lambda mu / 2

    @classmethod
    def of(cls, means: Tensor, precision: Tensor) -> Discriminant:
        weights = means @ precision
        return cls(weights, -0.5 * (weights * means).sum(-1))

    def __call__(self, x: Tensor) -> Tensor:
        """Scores ``[..., C]`` of images ``x [..., D]``."""
        return x @ self.weights.T + self.bias
