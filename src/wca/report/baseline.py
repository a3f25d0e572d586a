"""The report's baseline: the row each row's paired top-1 difference is to.

``--baseline wca`` pairs every row with the wca row of the same settings. A baseline may also
name settings of its own, ``wca[crop_budget=fixed,n_run=20]``: each row is then paired with the
wca row whose other settings are the row's, and whose named settings have the given values, so
an adaptive budget's row reads its difference to the paper's fixed N (the same accuracy at a
fifth of the passes, one row).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from wca.errors import SettingError
from wca.paired import paired_bootstrap
from wca.report import KEY

if TYPE_CHECKING:
    from wca.report.rows import Row


class Baseline(NamedTuple):
    """A method and the settings its rows must have (their values as the labels write them)."""

    method: str
    settings: dict[str, str]

    @classmethod
    def parse(cls, text: str) -> Baseline:
        """``wca`` or ``wca[crop_budget=fixed,n_run=20]``; a setting outside the report's
        columns, or not ``NAME=VALUE``, is a SettingError naming ``baseline``."""
        method, bracket, rest = text.partition("[")
        if not bracket:
            return cls(text.strip(), {})
        if not rest.endswith("]") or not method.strip():
            raise SettingError("baseline", f"{text!r} is not METHOD or METHOD[NAME=VALUE,...]")
        settings = {}
        for pair in filter(None, (part.strip() for part in rest[:-1].split(","))):
            name, equals, value = (part.strip() for part in pair.partition("="))
            if not equals or name not in KEY or name in ("method", "options"):
                known = ", ".join(name for name in KEY if name not in ("method", "options"))
                raise SettingError("baseline", f"{pair!r} is not NAME=VALUE of one of {known}")
            settings[name] = value
        return cls(method.strip(), settings)

    def is_row(self, row: Row) -> bool:
        """Whether ``row`` is one of the baseline's rows."""
        return row.method == self.method and all(
            str(row.settings[name]) == value for name, value in self.settings.items()
        )


def compare_to_baseline(rows: Sequence[Row], baseline: str) -> None:
    """Each row's paired top-1 difference to its baseline row (see the module doc;
    :func:`wca.paired.paired_bootstrap`), or a note saying why it has none."""
    chosen = Baseline.parse(baseline)

    def cell(row: Row) -> tuple[Any, ...]:  # the settings but the method's and the baseline's
        skip = ("method", "options", *chosen.settings)
        return tuple(row.settings[name] for name in KEY if name not in skip)

    partners: dict[tuple[Any, ...], list[Row]] = {}
    for row in rows:
        if chosen.is_row(row):
            partners.setdefault(cell(row), []).append(row)
    for row in rows:
        row.baseline = baseline
        found = partners.get(cell(row), [])
        base = found[0] if len(found) == 1 else None
        if chosen.is_row(row):
            row.delta_note = "the baseline"
        elif len(found) > 1:
            row.delta_note = f"{len(found)} {baseline} rows with these settings (other options)"
        elif base is None:
            row.delta_note = f"no {baseline} row with the same settings"
        elif isinstance(mine := row.per_image(), str):
            row.delta_note = mine
        elif isinstance(theirs := base.per_image(), str):
            row.delta_note = f"{baseline}: {theirs}"
        elif mine.shape != theirs.shape:
            row.delta_note = f"its images differ from {baseline}'s ({len(mine)} vs {len(theirs)})"
        else:
            row.delta = paired_bootstrap(mine, theirs)
