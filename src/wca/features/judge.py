"""The stopping head of adaptive extraction: which open images have read enough crops.

A :class:`StoppingHead` wraps a crop-reading head and a :class:`wca.stopping.CropBudget`.
After each round it scores the images that round completed, on every crop they read, and asks
the budget's rule whether they are settled. The margin rule's evidence is
:func:`wca.stopping.crop_evidence` for a head that declares ``evidence`` (WCA: exact, no
extra head call), else :func:`wca.stopping.prefix_evidence` of the head's scores after each
round (a head whose scores grow with the crops, such as ZERO's vote counts, is read through its
probabilities, on one scale whatever the crops).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from wca.deferred import torch
from wca.errors import SettingError

if TYPE_CHECKING:
    from torch import Tensor

    from wca.methods.base import Head
    from wca.stopping import CropBudget


class StoppingHead:
    """``head`` deciding, under ``budget``, when an image stops (see the module doc).
    ``logit_scale``: the model's temperature, for the probabilities of a head with its own."""

    def __init__(self, head: Head, budget: CropBudget, logit_scale: float = 100.0) -> None:
        if not head.uses_crops or head.online:
            raise ValueError(
                "the stopping head must read crops, one image at a time (a crop head such as "
                f"wca), not {type(head).__name__}"
            )
        self.head, self.budget, self.logit_scale = head, budget, float(logit_scale)

    def scores(self, image_emb: Tensor, crop_emb: Tensor) -> Tensor:
        """The head's scores ``[B, C]`` on every crop read ``[B, k, D]``, on one scale."""
        logits = self.head.logits(image_emb.float(), crop_emb.float())
        if self.head.own_probabilities:
            return self.head.probabilities(logits, self.logit_scale)
        return logits

    def settled(self, image_emb: Tensor, crop_emb: Tensor, history: Tensor, rounds: int) -> Tensor:
        """``bool [B]``: which of the images stop after round ``rounds - 1``, each having read
        the crops ``crop_emb [B, k, D]`` (k = ``budget.rounds()[rounds - 1]``), with the
        head's scores after each of its rounds ``history [B, rounds, C]``."""
        from wca.stopping import MarginRule, crop_evidence

        counts = self.budget.rounds()[:rounds]
        if crop_emb.shape[1] != counts[-1]:
            raise ValueError(f"round {rounds}: {crop_emb.shape[1]} crops, want {counts[-1]}")
        evidence = None
        if isinstance(self.budget.rule, MarginRule) and self.head.evidence:
            evidence = crop_evidence(*self.head.crop_terms(image_emb, crop_emb))
        return self.budget.settled(counts, history, evidence)


def history_of(rounds: list[list[Tensor]]) -> Tensor:
    """Images' scores after each of their rounds (a list per image, equal lengths) as
    ``[B, R, C]``."""
    return torch.stack([torch.stack(scores) for scores in rounds])


def stopping_head(
    heads: Mapping[str, Head], budget: CropBudget, logit_scale: float = 100.0
) -> StoppingHead:
    """The stopping head of an evaluation's adaptive budget: its ``wca`` head, else its first
    head that reads crops one image at a time."""
    chosen = heads.get("wca")
    if chosen is None:
        chosen = next((h for h in heads.values() if h.uses_crops and not h.online), None)
    if chosen is None:
        raise SettingError(
            "crop_budget",
            "adaptive needs a method that reads crops (wca, zero, mta, ...) to "
            f"decide when an image stops; the methods are {', '.join(heads) or 'none'}",
        )
    return StoppingHead(chosen, budget, logit_scale)
