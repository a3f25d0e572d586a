"""Model backends: a spec string (``open_clip:...``, ``hf:...``, a path, ``demo``) to an
:class:`Encoder`.

Importing this package registers the built-in backends (one module each) by spec prefix.
"""

from wca.encoders import hf_backend, open_clip_backend  # noqa: F401  (register the backends)
from wca.encoders.base import Encoder
from wca.encoders.hub import ModelNotAvailableError
from wca.encoders.registry import (
    BACKENDS,
    load_encoder,
    register_backend,
    register_named_model,
    resolve_spec,
)
from wca.encoders.tokens import check_texts

__all__ = [
    "BACKENDS",
    "Encoder",
    "ModelNotAvailableError",
    "check_texts",
    "load_encoder",
    "register_backend",
    "register_named_model",
    "resolve_spec",
]
