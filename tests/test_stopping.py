"""Stopping rules of anytime views (wca.stopping): each stops where its definition says, on
hand-built scores at and around its threshold; images of a batch stop independently; the
budget's bounds hold; bad settings are one-line errors naming the setting."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from wca.errors import SettingError
from wca.scoring import image_side
from wca.stopping import (
    CropBudget,
    Evidence,
    MarginRule,
    PatienceRule,
    crop_evidence,
    jackknife_evidence,
    prefix_evidence,
)


def history_of(tops: list[list[int]], classes: int = 3) -> torch.Tensor:
    """Round scores ``[B, R, C]`` whose top-1 after round j is ``tops[b][j]``."""
    return torch.nn.functional.one_hot(torch.tensor(tops), classes).double()


def two_class_crops(margins: list[float]) -> torch.Tensor:
    """Crop scores ``[1, k, 2]`` whose per-crop margin of class 0 over class 1 is ``margins``."""
    crop_margins = torch.tensor(margins, dtype=torch.float64)
    return torch.stack([crop_margins, torch.zeros_like(crop_margins)], dim=1).unsqueeze(0)


# ---------------------------------------------------------------------------------------------
# patience


def test_patience_counts_the_crops_since_the_top1_last_changed():
    counts = (4, 6, 8, 10, 12)
    # unchanged since 4 crops (8 read since), since 6 (6), since 10 (2), changed just now (0)
    history = history_of([[0, 0, 0, 0, 0], [0, 1, 1, 1, 1], [1, 1, 0, 1, 1], [2, 2, 2, 2, 1]])
    read_since = [8, 6, 2, 0]
    for b, since in enumerate(read_since):
        assert PatienceRule(since).settled(history, counts)[b]  # at the threshold
        assert not PatienceRule(since + 1).settled(history, counts)[b]  # one crop short
    assert PatienceRule(0).settled(history, counts).all()  # no patience: settled at once
    assert PatienceRule(6).settled(history, counts).tolist() == [True, True, False, False]


def test_patience_stops_a_sequence_at_the_round_its_definition_says():
    """Top-1 changes after 8 crops, then holds: patience 4 in rounds of 2 stops at 12 crops,
    patience 5 waits for the next round (14), as the definition's "at least p crops"."""
    budget = CropBudget(max_crops=20, min_crops=4, crops_per_round=2, rule=PatienceRule(4))
    counts = budget.rounds()
    tops = [0 if k < 8 else 1 for k in counts]
    for patience, stop in ((4, 12), (5, 14), (3, 12), (0, 4)):
        rule_budget = CropBudget(20, 4, 2, PatienceRule(patience))
        first = next(
            k
            for j, k in enumerate(counts)
            if rule_budget.settled(counts[: j + 1], history_of([tops[: j + 1]]))[0]
        )
        assert first == stop, patience


# ---------------------------------------------------------------------------------------------
# margin: WCA's crops


def test_margin_rule_at_its_threshold_on_equal_weights():
    """Margins [2, 0, 2, 0]: m = 1, leave-one-out means 2/3 and 4/3, jackknife se^2 =
    3/4 * 4/9 = 1/3; with N = 16 the finite correction 1 - 4/16 makes se 1/2, so z = m/se = 2."""
    evidence = crop_evidence(two_class_crops([2, 0, 2, 0]), torch.zeros(1, 4))
    assert evidence.top.tolist() == [0]
    assert evidence.margin[0].tolist() == pytest.approx([0.0, 1.0])
    assert evidence.se[0, 1].item() == pytest.approx(math.sqrt(1 / 3))
    assert MarginRule(1.99).settled(evidence, 4, 16).item()
    assert not MarginRule(2.01).settled(evidence, 4, 16).item()
    # without the correction (N far away) the same margins give z = sqrt(3) only
    assert not MarginRule(1.99).settled(evidence, 4, 10**9).item()
    assert MarginRule(1.73).settled(evidence, 4, 10**9).item()


def test_margin_rule_is_not_fooled_by_one_crop_that_carries_the_weight():
    """One crop with nearly all the weight votes for class 0, three others against: the
    weighted margin is positive, and the textbook error sum w_i^2 (d_i - m)^2 is about 0, but
    leaving that crop out flips the margin: leave-one-out margins -1, 1, 1, 1, jackknife se^2 =
    3/4 * (1.5^2 + 3 * 0.5^2) = 1.5^2, so z = 2/3 and the image stays open at any z above."""
    margins = two_class_crops([1.0, -1.0, -1.0, -1.0])
    logits = torch.tensor([[30.0, 0.0, 0.0, 0.0]])
    evidence = crop_evidence(margins, logits)
    weights = logits.double().softmax(dim=1)
    textbook = (weights.square() * (margins[..., 0] - evidence.margin[:, 1:]).square()).sum()
    assert evidence.margin[0, 1].item() == pytest.approx(1.0, abs=1e-9) and textbook < 1e-20
    assert evidence.se[0, 1].item() == pytest.approx(1.5)
    assert not MarginRule(0.7).settled(evidence, 4, 10**9).item()
    assert MarginRule(0.66).settled(evidence, 4, 10**9).item()


def test_margin_rule_tests_every_rival_not_only_the_runner_up():
    """Class 1 is the runner-up (margin 1) but steady; class 2 trails further (mean margin 2) but
    swings; the rule stops only when the weakest rival, class 2, is beaten."""
    crops = torch.tensor([[[5.0, 4.0, 5.0], [5.0, 4.0, 1.0], [5.0, 4.0, 5.0], [5.0, 4.0, 1.0]]])
    evidence = crop_evidence(crops.double(), torch.zeros(1, 4))
    assert evidence.margin[0].tolist() == pytest.approx([0.0, 1.0, 2.0])
    assert evidence.se[0, 1].item() == 0.0  # class 1 alone would settle at any z
    z_class2 = 2.0 / (math.sqrt(4 / 3) * math.sqrt(1 - 4 / 16))  # se^2 = 3/4 * 4 * (2/3)^2
    assert evidence.z_scores().item() == pytest.approx(2.0 / math.sqrt(4 / 3))
    assert MarginRule(z_class2 - 0.01).settled(evidence, 4, 16).item()
    assert not MarginRule(z_class2 + 0.01).settled(evidence, 4, 16).item()


def test_crop_evidence_is_the_weighted_mean_and_jackknife_of_its_definition():
    """Against a plain loop over the formulas of the module doc, on random peaked weights."""
    generator = torch.Generator().manual_seed(0)
    crops = torch.randn(3, 6, 5, generator=generator, dtype=torch.float64)
    logits = 20 * torch.rand(3, 6, generator=generator, dtype=torch.float64)
    evidence = crop_evidence(crops, logits)
    for b in range(3):
        scores = logits[b].softmax(0) @ crops[b]
        top = int(scores.argmax())
        assert evidence.top[b] == top
        assert torch.allclose(evidence.margin[b], scores[top] - scores)
        loo = []
        for i in range(6):
            keep = [j for j in range(6) if j != i]
            s = logits[b, keep].softmax(0) @ crops[b, keep]
            loo.append(s[top] - s)
        loo = torch.stack(loo)
        se = (5 / 6 * (loo - loo.mean(0)).square().sum(0)).sqrt()
        assert torch.allclose(evidence.se[b], se)


def test_crop_evidence_ranks_as_wca_scores():
    """crop_i . t_c under softmax(exp(4) cos(crop_i, full view)) ranks the classes as WCA's
    image side (both forms) does, with margins proportional to WCA's."""
    generator = torch.Generator().manual_seed(1)
    unit = lambda *s: torch.nn.functional.normalize(torch.randn(*s, generator=generator), dim=-1)  # noqa: E731
    crops, image, text = unit(8, 10, 16), unit(8, 16), unit(7, 16)
    logits = math.exp(4.0) * torch.einsum("bnd,bd->bn", crops, image)
    evidence = crop_evidence(crops @ text.T, logits)
    side = torch.einsum("bn,bnd->bd", logits.softmax(dim=1), crops)
    for form, factor in (("reference", 1 / side.norm(dim=1, keepdim=True)), ("paper", 1.0)):
        wca = image_side(crops, image, 4.0, form) @ text.T
        assert torch.equal(evidence.top, wca.argmax(-1))
        wca_margin = wca.max(-1, keepdim=True).values - wca
        assert torch.allclose((evidence.margin * factor).float(), wca_margin, atol=1e-5)


def test_one_crop_or_one_group_never_settles_a_margin():
    evidence = crop_evidence(two_class_crops([3.0]), torch.zeros(1, 1))
    assert torch.isinf(evidence.se[0, 1]) and not MarginRule(0.0).settled(evidence, 1, 60)
    one_group = jackknife_evidence(torch.tensor([[2.0, 0.0]]), torch.tensor([[[2.0, 0.0]]]))
    assert not MarginRule(0.0).settled(one_group, 2, 60)


def test_a_tie_never_settles_and_zero_z_settles_any_clear_lead():
    tie = crop_evidence(two_class_crops([0.0, 0.0]), torch.zeros(1, 2))
    assert not MarginRule(0.0).settled(tie, 2, 60)
    lead = crop_evidence(two_class_crops([0.1, 5.0]), torch.zeros(1, 2))
    assert MarginRule(0.0).settled(lead, 2, 60)


# ---------------------------------------------------------------------------------------------
# margin: any head, through its scores


def test_jackknife_evidence_over_rounds():
    """Scores 3 vs 1 on all crops; with each of 3 rounds left out the margin is 1, 2, 3: se^2 =
    2/3 * (1 + 0 + 1), z = 2 / sqrt(4/3) (no correction as N grows)."""
    scores = torch.tensor([[3.0, 1.0]])
    left_out = torch.tensor([[[2.0, 1.0], [3.0, 1.0], [4.0, 1.0]]])
    evidence = jackknife_evidence(scores, left_out)
    assert evidence.se[0, 1].item() == pytest.approx(math.sqrt(4 / 3))
    z = 2 / math.sqrt(4 / 3)
    assert MarginRule(z - 0.01).settled(evidence, 6, 10**9)
    assert not MarginRule(z + 0.01).settled(evidence, 6, 10**9)


def test_prefix_evidence_from_successive_round_scores():
    """Margins 1, 0.5, 0.75 after 2, 4, 8 crops: increments -0.5 and 0.25 over spacings 1/4 and
    1/8 give sigma^2 = (1 + 0.5) / 2; se^2 = sigma^2 / 8 * (1 - 8/32), so z = 2 sqrt(2)."""
    history = torch.tensor([[[1.0, 0.0], [0.5, 0.0], [0.75, 0.0]]])
    evidence = prefix_evidence(history, (2, 4, 8))
    assert evidence.se[0, 1].item() == pytest.approx(math.sqrt(0.75 / 8))
    assert MarginRule(2.82).settled(evidence, 8, 32)
    assert not MarginRule(2.83).settled(evidence, 8, 32)
    # two rounds are one increment: not enough to estimate the spread
    early = prefix_evidence(history[:, :2], (2, 4))
    assert not MarginRule(0.0).settled(early, 4, 32)


def test_budget_without_evidence_falls_back_to_prefix_scores():
    budget = CropBudget(max_crops=32, min_crops=2, crops_per_round=2, rule=MarginRule(2.82))
    history = torch.tensor([[[1.0, 0.0], [0.5, 0.0], [0.75, 0.0], [0.75, 0.0]]])
    # rounds 2, 4, 6, 8 here: the same margins at 2, 4 and 8 crops would be another spacing
    counts = budget.rounds()[:4]
    expected = MarginRule(2.82).settled(prefix_evidence(history, counts), 8, 32)
    assert budget.settled(counts, history).tolist() == expected.tolist()


# ---------------------------------------------------------------------------------------------
# batches and bounds


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), rule=st.sampled_from(["patience", "crops", "prefix"]))
def test_images_of_a_batch_stop_independently(seed, rule):
    generator = torch.Generator().manual_seed(seed)
    crops = torch.randn(5, 8, 4, generator=generator, dtype=torch.float64)
    logits = 3 * torch.randn(5, 8, generator=generator, dtype=torch.float64)
    counts = (2, 4, 6, 8)
    history = torch.stack(
        [torch.einsum("bk,bkc->bc", logits[:, :k].softmax(1), crops[:, :k]) for k in counts], 1
    )

    def decide(rows: slice) -> list[bool]:
        if rule == "patience":
            return PatienceRule(2).settled(history[rows], counts).tolist()
        evidence = (
            crop_evidence(crops[rows], logits[rows])
            if rule == "crops"
            else prefix_evidence(history[rows], counts)
        )
        return MarginRule(1.0).settled(evidence, 8, 16).tolist()

    alone = [decide(slice(b, b + 1))[0] for b in range(5)]
    assert decide(slice(None)) == alone


def test_rounds_of_a_budget():
    assert CropBudget(60, 4, 2).rounds() == (4, *range(6, 60, 2), 60)
    assert CropBudget(10, 4, 4).rounds() == (4, 8, 10)
    assert CropBudget(5, 5, 3).rounds() == (5,)
    assert CropBudget(7, 1, 10).rounds() == (1, 7)


@settings(max_examples=20, deadline=None)
@given(
    max_crops=st.integers(1, 16),
    min_crops=st.integers(1, 16),
    per_round=st.integers(1, 7),
    z=st.floats(0, 5),
    seed=st.integers(0, 1000),
)
def test_every_image_stops_within_the_bounds(max_crops, min_crops, per_round, z, seed):
    min_crops = min(min_crops, max_crops)
    budget = CropBudget(max_crops, min_crops, per_round, MarginRule(z))
    generator = torch.Generator().manual_seed(seed)
    crops = torch.randn(6, max_crops, 3, generator=generator, dtype=torch.float64)
    stop = torch.zeros(6, dtype=torch.long)
    counts = budget.rounds()
    for j, k in enumerate(counts):
        evidence = crop_evidence(crops[:, :k], torch.zeros(6, k, dtype=torch.float64))
        history = evidence.margin.unsqueeze(1).expand(-1, j + 1, -1)  # unused by this rule
        settled = budget.settled(counts[: j + 1], history, evidence) & (stop == 0)
        stop[settled] = k
    assert ((stop >= min_crops) & (stop <= max_crops)).all()
    assert set(stop.tolist()) <= set(counts)


def test_the_budget_closes_every_image_at_max_crops():
    budget = CropBudget(6, 2, 2, MarginRule(100.0))
    history = torch.zeros(3, 3, 2)  # ties: no rule would settle them
    assert budget.settled((2, 4, 6), history).all()
    assert not budget.settled((2, 4), history[:, :2]).any()


def test_crop_counts_must_be_the_budgets_rounds():
    with pytest.raises(ValueError, match="not rounds of"):
        CropBudget(10, 4, 2).settled((2, 4), torch.zeros(1, 2, 2))


def test_non_finite_scores_are_errors():
    with pytest.raises(ValueError, match="non-finite"):
        crop_evidence(two_class_crops([1.0, math.nan]), torch.zeros(1, 2))
    with pytest.raises(ValueError, match="non-finite"):
        PatienceRule(2).settled(torch.full((1, 2, 2), math.inf), (2, 4))


def test_evidence_z_scores_of_a_single_class_are_infinite():
    evidence = Evidence(torch.tensor([0]), torch.zeros(1, 1), torch.ones(1, 1))
    assert evidence.z_scores().item() == math.inf


@pytest.mark.parametrize(
    ("make", "setting"),
    [
        (lambda: PatienceRule(-1), "patience"),
        (lambda: PatienceRule(2.5), "patience"),
        (lambda: PatienceRule(True), "patience"),
        (lambda: MarginRule(-0.5), "margin_z"),
        (lambda: MarginRule(math.nan), "margin_z"),
        (lambda: MarginRule(math.inf), "margin_z"),
        (lambda: MarginRule("2"), "margin_z"),
        (lambda: CropBudget(max_crops=0), "max_crops"),
        (lambda: CropBudget(min_crops=0), "min_crops"),
        (lambda: CropBudget(max_crops=8, min_crops=9), "min_crops"),
        (lambda: CropBudget(crops_per_round=0), "crops_per_round"),
        (lambda: CropBudget(crops_per_round=1.0), "crops_per_round"),
        (lambda: CropBudget(rule="margin"), "rule"),
    ],
)
def test_bad_settings_are_one_line_errors_naming_the_setting(make, setting):
    with pytest.raises(SettingError) as error:
        make()
    assert error.value.setting == setting
    assert str(error.value).startswith(f"{setting}: ") and "\n" not in str(error.value)
