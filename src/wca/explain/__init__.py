"""Explanations a person can read: the paper's description figure (WCA's local match against
CLIP-D's whole-image similarity), heat-maps of where each description matches, the numbers as
JSON, and one self-contained HTML page. Every function takes a path, a PIL image or a tensor.
The where-maps contrast the crops covering a place with the others (``contrast``), over small
explanation crops (``windows``) encoded for the maps only.
"""

from wca.explain.figures import descriptions_figure, render_explanation
from wca.explain.page import write_explanations
from wca.explain.record import explanation_record
from wca.explain.where import where_figure, where_maps
from wca.explain.windows import Windows

__all__ = [
    "Windows",
    "descriptions_figure",
    "explanation_record",
    "render_explanation",
    "where_figure",
    "where_maps",
    "write_explanations",
]
