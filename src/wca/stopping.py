"""Anytime views: when an image has read enough crops.

WCA, ZERO, MTA, AWT and LaZSL read an image through N crops plus the full view, N + 1 encoder
passes; most images are decided long before the N-th crop. Adaptive extraction reads crops in
rounds: the full view and ``min_crops`` crops of every image, then ``crops_per_round`` more
crops of each image that is still open, until a stopping rule settles it or it has read
``max_crops`` (:class:`CropBudget`). An image's crops are a prefix of its fixed-N crops, so a
rule only decides how long a prefix it reads. Every function here is batched over the open
images, which have all read the same number of crops (they advance in lockstep). The numbers
behind the defaults are in benchmarks/README.md, section "Anytime views".

**Patience** (:class:`PatienceRule`): settled once the stopping head's top-1 has not changed for
``patience`` added crops, i.e. it was the top-1 after every round since one that had read at most
``k - patience`` of the ``k`` crops read now. It needs the top-1 after each round.

**Margin** (:class:`MarginRule`): settled when the top-1 a beats every rival c by a margin that
is large against its standard error,

    min_{c != a}  m_c / (se_c * sqrt(1 - k / N))  >  margin_z,

where k is the crops read and N = ``max_crops``. The factor sqrt(1 - k/N) is the finite-population
correction: the target is the answer after all N crops, not after infinitely many, so the
uncertainty shrinks to 0 at k = N. All rivals are tested, not only the runner-up: a rival with a
larger but swinging margin can be the weaker one (in trials on the demo, testing the runner-up
alone lost about 1 point at equal cost). ``m`` and ``se`` come from one of three
:class:`Evidence` builders:

- :func:`crop_evidence`, exact for WCA (Li et al., ICML 2024, Sec. 3) and any head whose score is
  a weighted mean of per-crop class scores. WCA scores class c by
  normalize(sum_i w_i crop_i) . t_c with w = softmax_i(exp(image_scale) cos(crop_i, full view))
  and t_c its text side; the norm is one positive factor for all classes (the paper's form has
  none), so the ranking is that of s_c = sum_i w_i x_ic, x_ic = crop_i . t_c, and the margin
  over rival c is the weighted mean of per-crop margins, m_c = sum_i w_i (x_ia - x_ic). Its
  standard error is the jackknife over crops: m_c^(-i) is the same weighted mean with crop i left
  out (the weights a softmax over the other k - 1 logits) and
  se_c^2 = (k-1)/k sum_i (m_c^(-i) - mean_i m_c^(-i))^2. Not the textbook standard error of a
  self-normalised weighted mean, sum_i w_i^2 (d_i - m)^2 (the weighted variance over Kish's
  effective sample size 1 / sum w_i^2): exp(4) cos makes the weights so peaked that after 4
  crops half the demo's images have an effective sample size under 1.6, that estimate is then
  near 0 whatever the crops say, and with it the rule's top-1 stayed near 88 % (fixed N = 60:
  93 %) for every z from 1 to 6. Leaving out the crop that carries the weight moves m as much
  as that crop decides, so a decision resting on one crop has a large jackknife error.
- :func:`jackknife_evidence`, for any head through its scores alone: the head's scores on all
  crops read and on the crops less each round (delete-a-group jackknife over the G rounds,
  G head calls); :func:`crop_evidence` is its one-crop-per-group case.
- :func:`prefix_evidence`, for any head through the scores it had after each round, with no
  extra head call: if the margin M_j after k_j crops behaves like a mean over the crops, its
  increments have Var(M_j - M_{j-1}) = sigma^2 (1/k_{j-1} - 1/k_j), so
  sigma_c^2 = mean_j (M_j - M_{j-1})^2 / (1/k_{j-1} - 1/k_j) and se_c^2 = sigma_c^2 / k. It
  needs :data:`MIN_INCREMENTS` increments and scores on one scale whatever k (ZERO's vote counts
  grow with k: pass its vote shares). It is the weakest of the three (benchmarks/README.md).

Assumptions: the crops are exchangeable draws (the paper's ``random`` crops; ``diverse`` nearly;
for the deterministic coarse-to-fine ``grid`` the rule is a heuristic) and a margin over crops
is near normal. ``margin_z`` is a threshold tuned on the demo, not a calibrated error rate:
testing after every round gives a wrong early stop more chances than one test would (an
anytime-valid boundary would grow like sqrt(log k) with the rounds).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from wca import defaults
from wca.errors import SettingError

MIN_INCREMENTS = 2  # prefix_evidence: round-to-round changes needed before a margin can settle


def _integer(setting: str, value: object, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SettingError(setting, f"must be an integer, got {value!r}")
    if value < least:
        raise SettingError(setting, f"must be >= {least}, got {value}")
    return value


def _finite(values: Tensor, what: str) -> Tensor:
    if not bool(torch.isfinite(values).all()):
        raise ValueError(f"{what} hold non-finite (NaN/inf) values: no rule can stop on them")
    return values.double()


@dataclass(frozen=True)
class Evidence:
    """What a margin rule reads, per open image: the top-1 ``top`` (long ``[B]``), its margin
    over each class ``margin`` ``[B, C]`` (0 at the top-1) and the margin's standard error
    ``se`` ``[B, C]`` (inf where it cannot be estimated yet)."""

    top: Tensor
    margin: Tensor
    se: Tensor

    def z_scores(self) -> Tensor:
        """min over rivals of margin / se ``[B]``: +inf where a margin is positive and its error
        0, 0 at a tie; +inf for an image of one class (it has no rival)."""
        ratio = torch.where(
            self.se > 0, self.margin / self.se, torch.where(self.margin > 0, math.inf, 0.0)
        )
        ratio[torch.arange(len(ratio), device=ratio.device), self.top] = math.inf
        return ratio.min(dim=1).values


def _margins(scores: Tensor, top: Tensor) -> Tensor:
    """scores ``[..., C]`` -> the top-1's score minus each class's, top ``[B]`` broadcast."""
    index = top.view(-1, *([1] * (scores.ndim - 1))).expand(*scores.shape[:-1], 1)
    return scores.gather(-1, index) - scores


def jackknife_evidence(scores: Tensor, left_out: Tensor) -> Evidence:
    """Margins of a head's ``scores`` ``[B, C]`` on every crop read, with the delete-a-group
    jackknife error from its scores with each group of crops left out ``[B, G, C]`` (a group:
    one crop, or the crops one round added). Fewer than 2 groups: the error is inf."""
    scores, left_out = _finite(scores, "scores"), _finite(left_out, "left-out scores")
    if left_out.ndim != 3 or left_out.shape[0] != scores.shape[0]:
        raise ValueError(f"left-out scores must be [B, G, C], got {tuple(left_out.shape)}")
    if left_out.shape[2] != scores.shape[1]:
        raise ValueError(f"left-out scores have {left_out.shape[2]} classes, not {scores.shape[1]}")
    top = scores.argmax(dim=1)
    groups = left_out.shape[1]
    if groups < 2:
        return Evidence(top, _margins(scores, top), torch.full_like(scores, math.inf))
    partial = _margins(left_out, top)  # [B, G, C]
    spread = (partial - partial.mean(dim=1, keepdim=True)).square().sum(dim=1)
    return Evidence(top, _margins(scores, top), ((groups - 1) / groups * spread).sqrt())


def crop_evidence(crop_scores: Tensor, weight_logits: Tensor) -> Evidence:
    """Evidence of a weighted crop mean, WCA's score (see the module doc), jackknifed over crops.

    ``crop_scores`` ``[B, k, C]``: each crop's class scores x_ic = crop_i . t_c (for WCA,
    ``crop_emb @ head.text.T``); ``weight_logits`` ``[B, k]``: the logits of the crop weights,
    w = softmax(weight_logits) (for WCA, exp(image_scale) * cos(crop_i, full view)). The scores
    are s_c = sum_i w_i x_ic, WCA's up to one positive factor per image.
    """
    crop_scores = _finite(crop_scores, "crop scores")
    weight_logits = _finite(weight_logits, "crop weight logits")
    if crop_scores.ndim != 3 or weight_logits.shape != crop_scores.shape[:2]:
        raise ValueError(
            f"crop scores [B, k, C] and weight logits [B, k] disagree: "
            f"{tuple(crop_scores.shape)} and {tuple(weight_logits.shape)}"
        )
    crops = crop_scores.shape[1]
    scores = torch.einsum("bk,bkc->bc", weight_logits.softmax(dim=1), crop_scores)
    if crops < 2:  # one crop has no jackknife
        return jackknife_evidence(scores, crop_scores[:, :0])
    # row i: the weights with crop i left out, a softmax over the other logits (exact even
    # when one crop carries nearly all the weight)
    alone = torch.eye(crops, dtype=torch.bool, device=weight_logits.device)
    others = weight_logits.unsqueeze(1).expand(-1, crops, -1).masked_fill(alone, -math.inf)
    left_out = torch.einsum("bik,bkc->bic", others.softmax(dim=2), crop_scores)
    return jackknife_evidence(scores, left_out)


def prefix_evidence(history: Tensor, counts: Sequence[int]) -> Evidence:
    """Evidence from a head's scores after each round alone, ``history`` ``[B, R, C]`` after
    ``counts[j]`` crops (see the module doc). Fewer than :data:`MIN_INCREMENTS` + 1 rounds: the
    error is inf."""
    history = _finite(history, "round scores")
    _check_rounds(history, counts)
    top = history[:, -1].argmax(dim=1)
    margins = _margins(history, top)  # [B, R, C]
    if len(counts) <= MIN_INCREMENTS:
        return Evidence(top, margins[:, -1], torch.full_like(margins[:, -1], math.inf))
    k = torch.tensor(counts, dtype=torch.float64, device=history.device)
    spacing = 1 / k[:-1] - 1 / k[1:]  # an increment's variance over sigma^2
    sigma2 = (margins.diff(dim=1).square() / spacing.view(1, -1, 1)).mean(dim=1)
    return Evidence(top, margins[:, -1], (sigma2 / k[-1]).sqrt())


def _check_rounds(history: Tensor, counts: Sequence[int]) -> None:
    if history.ndim != 3 or history.shape[1] != len(counts) or not counts:
        raise ValueError(
            f"round scores must be [B, R, C] with R = {len(counts)} crop counts, "
            f"got {tuple(history.shape)}"
        )
    if any(b <= a for a, b in zip(counts, counts[1:], strict=False)) or counts[0] < 1:
        raise ValueError(f"crop counts must rise from >= 1, got {list(counts)}")


@dataclass(frozen=True)
class PatienceRule:
    """Settled once the top-1 has not changed for ``patience`` added crops (module doc)."""

    patience: int = 8

    def __post_init__(self) -> None:
        _integer("patience", self.patience, 0)

    def settled(self, history: Tensor, counts: Sequence[int]) -> Tensor:
        """``bool [B]`` from the stopping head's scores after each round, ``history``
        ``[B, R, C]`` after ``counts[j]`` crops."""
        _check_rounds(history, counts)
        top = _finite(history, "round scores").argmax(dim=2)  # [B, R]
        same = top == top[:, -1:]
        # the final run of rounds whose top-1 is today's: its first round
        run = same.flip(1).int().cumprod(dim=1).flip(1)
        first = run.argmax(dim=1)
        read_since = counts[-1] - torch.tensor(counts, device=first.device)[first]
        return read_since >= self.patience


@dataclass(frozen=True)
class MarginRule:
    """Settled when min over rivals of margin / (se sqrt(1 - k/N)) > ``margin_z`` (module doc)."""

    margin_z: float = 3.0

    def __post_init__(self) -> None:
        z = self.margin_z
        if isinstance(z, bool) or not isinstance(z, int | float) or not 0 <= z < math.inf:
            raise SettingError("margin_z", f"must be a finite number >= 0, got {z!r}")
        object.__setattr__(self, "margin_z", float(z))

    def settled(self, evidence: Evidence, crops: int, max_crops: int) -> Tensor:
        """``bool [B]`` after ``crops`` of at most ``max_crops`` crops."""
        if not 1 <= crops <= max_crops:
            raise ValueError(f"crops read must be in [1, {max_crops}], got {crops}")
        correction = math.sqrt(1 - crops / max_crops)
        scaled = Evidence(evidence.top, evidence.margin, evidence.se * correction)
        return scaled.z_scores() > self.margin_z


Rule = PatienceRule | MarginRule


@dataclass(frozen=True)
class CropBudget:
    """How many crops an image reads: at least ``min_crops`` and at most ``max_crops``, in rounds
    of ``crops_per_round``, stopping when ``rule`` settles it. ``max_crops`` is the fixed-N
    crop count (``CropSpec.n_crops``): a budget never reads more than fixed N would. Made from
    the settings ``crop_budget``, ``stop_rule``, ``margin_z``, ``patience``, ``min_crops``,
    ``crops_per_round`` by :meth:`wca.budget.BudgetSpec.stopping`; ``n_crops`` is max_crops."""

    max_crops: int = defaults.N_CROPS
    min_crops: int = 4
    crops_per_round: int = 2
    rule: Rule = MarginRule()

    def __post_init__(self) -> None:
        _integer("max_crops", self.max_crops, 1)
        _integer("min_crops", self.min_crops, 1)
        _integer("crops_per_round", self.crops_per_round, 1)
        if self.min_crops > self.max_crops:
            raise SettingError(
                "min_crops", f"must be <= max_crops ({self.max_crops}), got {self.min_crops}"
            )
        if not isinstance(self.rule, PatienceRule | MarginRule):
            raise SettingError("rule", f"must be a PatienceRule or MarginRule, got {self.rule!r}")

    def rounds(self) -> tuple[int, ...]:
        """The crops read after each round: min_crops, + crops_per_round, ..., max_crops."""
        step = self.crops_per_round
        return (*range(self.min_crops, self.max_crops, step), self.max_crops)

    def settled(
        self, counts: Sequence[int], history: Tensor, evidence: Evidence | None = None
    ) -> Tensor:
        """Which open images stop now, ``bool [B]``, after the rounds ``counts`` (a prefix of
        :meth:`rounds`). ``history`` ``[B, R, C]``: the stopping head's scores after each
        round. ``evidence``: the margin rule's (:func:`crop_evidence` for WCA,
        :func:`jackknife_evidence`); None: :func:`prefix_evidence` of ``history``. Every image
        settles at ``max_crops``; none before ``min_crops``."""
        if tuple(counts) != self.rounds()[: len(counts)]:
            raise ValueError(f"crop counts {list(counts)} are not rounds of {self}")
        crops = counts[-1]
        if crops >= self.max_crops:
            return torch.ones(history.shape[0], dtype=torch.bool, device=history.device)
        if isinstance(self.rule, PatienceRule):
            return self.rule.settled(history, counts)
        if evidence is None:
            evidence = prefix_evidence(history, counts)
        return self.rule.settled(evidence, crops, self.max_crops)
