"""wca: weighted visual-text cross alignment for zero-shot classification with CLIP-style models."""

__version__ = "0.1.0"
