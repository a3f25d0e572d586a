"""The crop budget as declared settings: flags with their defaults, checks naming the setting,
the stopping budget they make, and what a result records of them."""

from __future__ import annotations

import pytest

from wca.budget import BudgetSpec
from wca.cli import main
from wca.config import EvalConfig
from wca.errors import SettingError
from wca.stopping import CropBudget, MarginRule, PatienceRule


def test_eval_help_lists_the_budget_flags_with_their_defaults(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    for flag, default in [
        ("--crop-budget {fixed,adaptive}", "fixed"),
        ("--stop-rule {margin,patience}", "margin"),
        ("--margin-z Z", "3.0"),
        ("--patience CROPS", "8"),
        ("--min-crops K", "4"),
        ("--crops-per-round R", "2"),
    ]:
        assert flag in help_text
        after = help_text.split(flag + " ", 2)[-1]
        assert f"(default: {default})" in after.split("--", 1)[0]


def test_fixed_is_the_default_and_makes_no_stopping_budget() -> None:
    assert BudgetSpec().stopping(60) is None
    assert EvalConfig().budget.crop_budget == "fixed"


def test_adaptive_settings_make_the_stopping_budget() -> None:
    margin = BudgetSpec(crop_budget="adaptive", margin_z=2.5, min_crops=3, crops_per_round=1)
    assert margin.stopping(10) == CropBudget(10, 3, 1, MarginRule(2.5))
    patience = BudgetSpec(crop_budget="adaptive", stop_rule="patience", patience=5)
    assert patience.stopping(60) == CropBudget(60, 4, 2, PatienceRule(5))


@pytest.mark.parametrize(
    ("values", "setting"),
    [
        ({"margin_z": -1}, "margin_z"),
        ({"patience": 1.5}, "patience"),
        ({"crop_budget": "sometimes"}, "crop_budget"),
        ({"min_crops": 0}, "min_crops"),
        ({"crops_per_round": 0}, "crops_per_round"),
    ],
)
def test_a_bad_value_names_its_setting(values, setting) -> None:
    with pytest.raises(SettingError) as error:
        BudgetSpec(**values)
    assert error.value.setting == setting


def test_min_crops_above_n_crops_is_refused_under_the_adaptive_budget() -> None:
    with pytest.raises(SettingError, match="min_crops"):
        BudgetSpec(crop_budget="adaptive", min_crops=8).stopping(4)
    with pytest.raises(ValueError, match="min_crops"):
        EvalConfig(crop_budget="adaptive", n_crops=2)
    EvalConfig(n_crops=2)  # fixed: min_crops is not read


def test_a_fixed_result_records_no_budget_and_an_adaptive_one_its_rule() -> None:
    assert not set(EvalConfig().to_dict()) & set(BudgetSpec.model_fields)
    adaptive = EvalConfig(crop_budget="adaptive", stop_rule="patience", patience=6).to_dict()
    recorded = {name: adaptive.get(name) for name in BudgetSpec.model_fields}
    assert recorded == {
        "crop_budget": "adaptive",
        "stop_rule": "patience",
        "margin_z": None,
        "patience": 6,
        "min_crops": 4,
        "crops_per_round": 2,
    }
