"""Optional parts of wca and the extras that install them: the LLM client (``wca[llm]``: openai,
tenacity) for ``describe``, plotting (``wca[plot]``: matplotlib) for explanations and report
figures, the web page (``wca[web]``: gradio). A missing one is one line naming the extra."""

from __future__ import annotations

import importlib
from types import ModuleType

EXTRAS = {"openai": "llm", "tenacity": "llm", "matplotlib": "plot", "gradio": "web"}


class MissingExtra(ImportError):
    """An optional package is not installed; the message names the extra that installs it."""


def require(module: str, purpose: str) -> ModuleType:
    """``module`` imported, or :class:`MissingExtra` saying which extra ``purpose`` needs."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        package = module.split(".")[0]
        if error.name is not None and error.name.split(".")[0] != package:
            raise  # the package is there, something it imports is broken
        extra = EXTRAS[package]
        raise MissingExtra(
            f"{purpose} needs {package}, which is not installed: pip install 'wca[{extra}]'",
            name=package,
        ) from None
