"""The text-embedding cache on disk, by (model identity, text), shared by every command.

``<root>/<hash of the model identity and dtype>/`` holds safetensors shards, each written
atomically (:func:`wca.files.write_atomic`) with up to :data:`TEXTS_PER_SHARD` texts:
``keys`` (the SHA-256 of each text, ``uint8 [T, 32]``), ``embeddings`` (``float32 [T, D]``, as
the encoder returned them) and ``tokens`` (each text's token count, ``-1`` if not counted), and
in its metadata the model identity and a SHA-256 of the three tensors. A shard is checked when
it is read; one that does not verify is removed with one warning and its texts are encoded
again. Shards are named by their keys, so processes writing the same texts write the same file.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

from wca.files import write_atomic

FORMAT = "1"
TEXTS_PER_SHARD = 4096
KEY_BYTES = 32
log = logging.getLogger("wca")


def text_key(text: str) -> bytes:
    """The cache key of one text: the SHA-256 of its UTF-8 bytes."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


def _checksum(keys: Tensor, embeddings: Tensor, tokens: Tensor) -> str:
    digest = hashlib.sha256()
    for tensor in (keys, embeddings, tokens):
        digest.update(tensor.contiguous().numpy().tobytes())
    return digest.hexdigest()


class DamagedShard(ValueError):
    """A shard that cannot be read or does not verify."""


class TextCache:
    """The cached text embeddings of one model (``identity``) at one precision (``dtype``)."""

    def __init__(self, root: Path, identity: str, dtype: torch.dtype) -> None:
        self.root = root
        self.identity = f"{identity}|{dtype}"
        self.folder = root / hashlib.sha256(self.identity.encode()).hexdigest()[:24]
        self._index: dict[bytes, Path] = {}  # text key -> the shard holding it
        self._indexed: set[Path] = set()

    def lookup(self, texts: list[str]) -> dict[str, tuple[Tensor, int]]:
        """The cached ``(embedding, token count)`` of those ``texts`` that are on disk."""
        self._refresh()
        wanted: dict[Path, list[tuple[str, bytes]]] = {}
        for text in texts:
            key = text_key(text)
            if key in self._index:
                wanted.setdefault(self._index[key], []).append((text, key))
        found: dict[str, tuple[Tensor, int]] = {}
        for path, items in wanted.items():
            try:
                keys, embeddings, tokens = self._read(path)
            except FileNotFoundError:  # removed by another process since it was indexed
                self._indexed.discard(path)
                self._forget(path)
                continue
            except DamagedShard as error:
                self._discard(path, str(error))
                continue
            row = {key: i for i, key in enumerate(_split(keys))}
            held = [(text, row[key]) for text, key in items if key in row]
            rows = [i for _, i in held]
            picked, counts = embeddings[rows], tokens[rows].tolist()  # copies, not views
            for (text, _), embedding, count in zip(held, picked, counts, strict=True):
                found[text] = (embedding, count)
        return found

    def store(self, texts: list[str], embeddings: Tensor, tokens: list[int]) -> Path:
        """Write one shard of ``texts`` with their embeddings and token counts (``-1``: not
        counted), atomically; returns its path."""
        keys = torch.frombuffer(bytearray(b"".join(map(text_key, texts))), dtype=torch.uint8)
        tensors = {
            "keys": keys.reshape(len(texts), KEY_BYTES),
            "embeddings": embeddings.float().contiguous(),
            "tokens": torch.tensor(tokens, dtype=torch.int32),
        }
        metadata = {
            "format": FORMAT,
            "identity": self.identity,
            "sha256": _checksum(tensors["keys"], tensors["embeddings"], tensors["tokens"]),
        }
        name = hashlib.sha256(tensors["keys"].numpy().tobytes()).hexdigest()[:24]
        path = write_atomic(
            self.folder / f"{name}.safetensors",
            lambda tmp: save_file(tensors, str(tmp), metadata),
        )
        self._indexed.add(path)
        for key in _split(tensors["keys"]):
            self._index[key] = path
        return path

    def _refresh(self) -> None:
        """Index the keys of shards written since the last look (by any process)."""
        if not self.folder.is_dir():
            return
        for path in sorted(self.folder.glob("*.safetensors")):
            if path in self._indexed:
                continue
            self._indexed.add(path)
            try:
                with safe_open(str(path), framework="pt") as shard:
                    self._check_metadata(shard.metadata())
                    keys = shard.get_tensor("keys")
            except FileNotFoundError:
                self._indexed.discard(path)
                continue
            except Exception as error:  # safetensors raises its own error types
                self._discard(path, _reason(error))
                continue
            for key in _split(keys):
                self._index.setdefault(key, path)

    def _read(self, path: Path) -> tuple[Tensor, Tensor, Tensor]:
        """A shard's keys, embeddings and token counts, verified against its checksum."""
        try:
            with safe_open(str(path), framework="pt") as shard:
                metadata = shard.metadata()
                self._check_metadata(metadata)
                keys, embeddings, tokens = (
                    shard.get_tensor(name) for name in ("keys", "embeddings", "tokens")
                )
        except (FileNotFoundError, DamagedShard):
            raise
        except Exception as error:
            raise DamagedShard(_reason(error)) from error
        rows = keys.shape[0]
        if keys.shape != (rows, KEY_BYTES) or embeddings.ndim != 2 or tokens.shape != (rows,):
            raise DamagedShard("its tensors do not fit together")
        if embeddings.shape[0] != rows or metadata["sha256"] != _checksum(keys, embeddings, tokens):
            raise DamagedShard("its checksum does not match")
        return keys, embeddings, tokens

    def _check_metadata(self, metadata: dict[str, str] | None) -> None:
        if not metadata or metadata.get("format") != FORMAT or "sha256" not in metadata:
            raise DamagedShard("it is not a text-cache shard of this version")
        if metadata.get("identity") != self.identity:
            raise DamagedShard("it belongs to another model")

    def _discard(self, path: Path, reason: str) -> None:
        """Warn once about a damaged shard, remove it and forget its keys."""
        log.warning("text cache: %s is damaged (%s); its texts are encoded again", path, reason)
        with contextlib.suppress(OSError):  # a read-only cache: kept, not read again here
            path.unlink(missing_ok=True)
        self._forget(path)

    def _forget(self, path: Path) -> None:
        self._index = {key: where for key, where in self._index.items() if where != path}


def _split(keys: Tensor) -> list[bytes]:
    """The rows of a ``uint8 [T, 32]`` key tensor as bytes."""
    blob = keys.contiguous().numpy().tobytes()
    return [blob[i : i + KEY_BYTES] for i in range(0, len(blob), KEY_BYTES)]


def _reason(error: Exception) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 120 else text[:117] + "..."
