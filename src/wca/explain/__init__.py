"""Explanations a person can read: the paper's description figure (WCA's local match against
CLIP-D's whole-image similarity), heat-maps of where each description matches, the numbers as
JSON, and one self-contained HTML page. Every function takes a path, a PIL image or a tensor.
"""

from wca.explain.figures import descriptions_figure, render_explanation
from wca.explain.page import write_explanations
from wca.explain.record import explanation_record
from wca.explain.where import where_figure

__all__ = [
    "descriptions_figure",
    "explanation_record",
    "render_explanation",
    "where_figure",
    "write_explanations",
]
