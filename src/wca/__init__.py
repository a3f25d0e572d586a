"""wca: weighted visual-text cross alignment for zero-shot classification with CLIP-style models."""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.4.0"

# Public names and the modules that define them, imported on first use so that `import wca`
# stays light (no model library, no plotting) until a name is needed.
_EXPORTS = {
    "WCAClassifier": "wca.classifier",
    "zero_shot_pipeline": "wca.zero_shot",
    "Prediction": "wca.prediction",
    "load_encoder": "wca.encoders",
    "Encoder": "wca.encoders",
    "render_explanation": "wca.explain",
    "build_head": "wca.methods",
    "load_text_sources": "wca.methods",
    "TextSources": "wca.methods",
    "METHODS": "wca.methods",
    "wca_scores": "wca.scoring",
    "load_dataset": "wca.datasets",
    "extract_features": "wca.features",
    "Features": "wca.features",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'wca' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
