"""Heavy modules imported where a computation first uses them, not where the code names them.

The method registry's names and option schemas, which every setting is checked against, live
in the heads' own modules. Those modules write ``from wca.deferred import F, torch`` instead
of ``import torch``: they read like any torch code (``torch.cat``, ``F.normalize``), yet
importing them costs no torch, so a mistyped setting is answered before torch's import
(seconds), and torch loads with the first tensor operation. Type checkers see the real
modules. ``Tensor`` in annotations comes from ``torch`` under ``TYPE_CHECKING``.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING


class Deferred(types.ModuleType):
    """Stands for module ``name`` and imports it at the first attribute read."""

    def __getattr__(self, attribute: str):
        module = sys.modules.get(self.__name__) or importlib.import_module(self.__name__)
        return getattr(module, attribute)


if TYPE_CHECKING:
    import networkx as nx
    import torch
    import torch.nn.functional as F
else:
    torch = Deferred("torch")
    F = Deferred("torch.nn.functional")
    nx = Deferred("networkx")

__all__ = ["Deferred", "F", "nx", "torch"]
