"""Each image's top-1 correctness per run, packed as text for a result file: one bit per
image and run, compressed (methods without crops repeat their runs), enough for paired
statistics between methods (:mod:`wca.paired`)."""

from __future__ import annotations

import base64
import zlib

import numpy as np

ENCODING = "base64(zlib(numpy.packbits(bool [n_run, n_images], row-major)))"


def pack_correct(correct: np.ndarray) -> str:
    """Top-1 correctness ``bool [n_run, n_images]`` as text (:data:`ENCODING`): one
    bit per image and run, compressed (methods without crops repeat their runs)."""
    bits = np.packbits(np.asarray(correct, dtype=bool), axis=None)
    return base64.b64encode(zlib.compress(bits.tobytes(), 9)).decode("ascii")


def unpack_correct(text: str, n_run: int, n_images: int) -> np.ndarray:
    bits = np.frombuffer(zlib.decompress(base64.b64decode(text)), dtype=np.uint8)
    return np.unpackbits(bits, count=n_run * n_images).astype(bool).reshape(n_run, n_images)
