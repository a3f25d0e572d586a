"""Explanations a person can read: the paper's description figure (WCA's local match against
CLIP-D's whole-image similarity), heat-maps of where each description matches, the numbers as
JSON, and one self-contained HTML page. Every function takes a path, a PIL image or a tensor.
The where-maps contrast the crops covering a place with the others (``contrast``), over small
explanation crops (``windows``) encoded for the maps only. Figures need matplotlib (the
``wca[plot]`` extra).
"""

from wca.extras import require

require("matplotlib", "explanations")

from wca.explain.figures import descriptions_figure, render_explanation  # noqa: E402
from wca.explain.page import write_explanations  # noqa: E402
from wca.explain.record import explanation_record  # noqa: E402
from wca.explain.where import where_figure, where_maps  # noqa: E402
from wca.explain.windows import Windows  # noqa: E402

__all__ = [
    "Windows",
    "descriptions_figure",
    "explanation_record",
    "render_explanation",
    "where_figure",
    "where_maps",
    "write_explanations",
]
