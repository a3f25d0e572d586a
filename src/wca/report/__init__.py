"""`wca report`: result files as rows that never mix settings (:mod:`wca.report.rows`), a
table, CSV and the paper's numbers (:mod:`wca.report.render`), one figure per dataset
(:mod:`wca.report.plot`).

The columns and defaults live here (the settings from the result schema, :mod:`wca.results`,
which imports no model library), so the CLI's help costs little; the public functions of the
submodules are reachable as ``wca.report.NAME`` (loaded on first use).
"""

from __future__ import annotations

import importlib
from typing import Any

from wca.results import IDENTITY

DEFAULT_GROUP_BY = ("dataset", "model")
DEFAULT_BASELINE = "clip"
# Every setting that changes a number (the result schema's identity, the model spec as
# model_spec), with the method and its options, in the order labels name them.
_CELL = tuple("model_spec" if name == "model" else name for name in IDENTITY)
_LEAD = ("dataset", "split", "data_root", "model_spec", "model_sha256")  # where, which model
KEY = (*_LEAD, "method", "options", *(name for name in _CELL if name not in _LEAD))
GROUP_COLUMNS = ("model", *KEY)  # model: the short model label (clip_benchmark name, file stem)

_PUBLIC = {
    "rows": (
        "Row", "Unknown", "label_rows", "load_rows", "read_results", "result_files", "rows_of",
        "settings_of", "short_model",
    ),
    "baseline": ("Baseline", "compare_to_baseline"),
    "render": (
        "CSV_COLUMNS", "notes", "paper_key", "paper_numbers", "table", "with_paper", "write_csv",
    ),
    "plot": ("dataset_figure", "plot"),
}  # fmt: skip
_MODULE_OF = {name: module for module, names in _PUBLIC.items() for name in names}


def __getattr__(name: str) -> Any:
    if name in _MODULE_OF:
        return getattr(importlib.import_module(f"wca.report.{_MODULE_OF[name]}"), name)
    raise AttributeError(f"module 'wca.report' has no attribute {name!r}")
