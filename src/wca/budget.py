"""The crop budget as settings: how many of an image's crops are read (anytime views).

``crop_budget="fixed"`` (the default everywhere: the paper's protocol) reads all ``n_crops``
crops of every image. ``"adaptive"`` reads them in rounds (:mod:`wca.features.rounds`): the
full view and ``min_crops`` crops, then ``crops_per_round`` more while ``stop_rule`` has not
settled the image, at most ``n_crops``. The crops read are a prefix of the fixed spec's, so
``n_crops`` is the most an image reads. The rules and their formulas: :mod:`wca.stopping`.

The settings are declared once here (type, bounds, help, identity) and shared by
:class:`BudgetSpec` (the classifier, ``wca classify``, ``explain``, ``serve``) and
:class:`wca.config.EvalConfig` (``wca eval``). They change a number only under the adaptive
budget, so a fixed run's record leaves them out (:func:`recorded`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from wca.crops import setting_error
from wca.errors import SettingError

if TYPE_CHECKING:
    from wca.stopping import CropBudget

DEFAULT_MARGIN_Z = 3.0  # benchmarks/README.md section 16: the margin rule's chosen setting
DEFAULT_PATIENCE = 8
DEFAULT_MIN_CROPS = 4
DEFAULT_CROPS_PER_ROUND = 2


def _budget(**extra: Any) -> dict[str, Any]:
    return {"group": "crops", "identity": True, **extra}


BudgetName = Annotated[
    Literal["fixed", "adaptive"],
    Field(
        description="fixed: every image reads n_crops crops (the paper's protocol); adaptive: "
        "crops are read in rounds until stop_rule settles the image, at most n_crops",
        json_schema_extra=_budget(),
    ),
]
StopRuleName = Annotated[
    Literal["margin", "patience"],
    Field(
        description="adaptive budget's stopping rule: margin (top-1's margin over every rival "
        "against its jackknife error, above margin_z) or patience (top-1 unchanged for "
        "patience added crops)",
        json_schema_extra=_budget(),
    ),
]
MarginZ = Annotated[
    float,
    Field(
        ge=0,
        description="margin rule: the margin / standard error an image needs to stop",
        json_schema_extra=_budget(metavar="Z"),
    ),
]
Patience = Annotated[
    int,
    Field(
        ge=0,
        description="patience rule: added crops without a change of top-1 to stop",
        json_schema_extra=_budget(metavar="CROPS"),
    ),
]
MinCrops = Annotated[
    int,
    Field(
        ge=1,
        description="adaptive budget: crops every image reads before a rule may stop it",
        json_schema_extra=_budget(metavar="K"),
    ),
]
CropsPerRound = Annotated[
    int,
    Field(
        ge=1,
        description="adaptive budget: crops an open image reads per round",
        json_schema_extra=_budget(metavar="R"),
    ),
]
class BudgetSpec(BaseModel):
    """How many crops an image reads (see the module doc). An invalid value raises a
    :class:`~wca.errors.SettingError` naming the setting."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    crop_budget: BudgetName = "fixed"
    stop_rule: StopRuleName = "margin"
    margin_z: MarginZ = DEFAULT_MARGIN_Z
    patience: Patience = DEFAULT_PATIENCE
    min_crops: MinCrops = DEFAULT_MIN_CROPS
    crops_per_round: CropsPerRound = DEFAULT_CROPS_PER_ROUND

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as error:
            raise setting_error(error) from None

    @property
    def adaptive(self) -> bool:
        return self.crop_budget == "adaptive"

    def stopping(self, n_crops: int) -> CropBudget | None:
        """The :class:`wca.stopping.CropBudget` of these settings with at most ``n_crops``
        crops (None under the fixed budget). ``min_crops`` above ``n_crops`` is an error."""
        if not self.adaptive:
            return None
        if self.min_crops > n_crops:
            raise SettingError(
                "min_crops",
                f"must be <= n_crops ({n_crops}) under the adaptive budget, got {self.min_crops}",
            )
        from wca.stopping import CropBudget, MarginRule, PatienceRule

        rule = (
            MarginRule(self.margin_z) if self.stop_rule == "margin" else PatienceRule(self.patience)
        )
        return CropBudget(n_crops, self.min_crops, self.crops_per_round, rule)


BUDGET_SETTINGS = tuple(BudgetSpec.model_fields)  # their names, in their order


def budget_of(values: Mapping[str, Any]) -> BudgetSpec:
    """The :class:`BudgetSpec` of the budget settings among ``values`` (others ignored)."""
    return BudgetSpec(**{name: values[name] for name in BUDGET_SETTINGS if name in values})


def recorded(values: Mapping[str, Any]) -> dict[str, Any]:
    """The budget settings that change a number, as a result records them: none under the
    fixed budget (so fixed results stay those of before the budget existed); under the
    adaptive one, the budget, its rule with the rule's own parameter, ``min_crops`` and
    ``crops_per_round``."""
    spec = budget_of(values)
    if not spec.adaptive:
        return {}
    parameter = "margin_z" if spec.stop_rule == "margin" else "patience"
    names = ("crop_budget", "stop_rule", parameter, "min_crops", "crops_per_round")
    return {name: getattr(spec, name) for name in names}
