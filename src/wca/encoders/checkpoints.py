"""Checks of local checkpoint files before and after torch reads them.

Checkpoints are never unpickled as arbitrary Python: torch's weights-only unpickler refuses any
global (class or function) outside its allowlist. When it refuses, :func:`code_references`
reads the file's pickles with :mod:`pickletools` (without running them) to name what the file
refers to, so the user is told the file holds Python code objects, not torch's advice to turn
the protection off. Zip checkpoints are also checked against their CRC-32s, which torch does not.
"""

from __future__ import annotations

import _compat_pickle
import pickle
import pickletools
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch
from safetensors import SafetensorError

LEGACY_PICKLES = 4  # torch's legacy format: magic number, protocol, sys info, then the object
STRING_OPS = {
    "STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "BINUNICODE", "SHORT_BINUNICODE",
    "BINUNICODE8",
}  # fmt: skip
GET_OPS = {"GET", "BINGET", "LONG_BINGET"}
PUT_OPS = {"PUT", "BINPUT", "LONG_BINPUT"}


def allowed_globals() -> set[str]:
    """``module.name`` of every global torch's weights-only unpickler accepts: its own
    allowlist and those added with ``torch.serialization.add_safe_globals``."""
    from torch import _weights_only_unpickler as unpickler

    names = set(unpickler._get_allowed_globals())
    for entry in torch.serialization.get_safe_globals():
        obj, name = entry if isinstance(entry, tuple) else (entry, None)
        names.add(name or f"{obj.__module__}.{obj.__qualname__}")
    return names


def code_references(path: Path) -> list[str]:
    """The globals (``module.name``) that the pickles of the torch checkpoint at ``path`` refer
    to and torch's weights-only unpickler does not allow, in file order; ``[]`` when there are
    none or the pickles cannot be read. Nothing in the file is run."""
    allowed = allowed_globals()
    found = [name for name in _pickle_globals(path) if name not in allowed]
    return list(dict.fromkeys(found))


def _pickle_globals(path: Path) -> Iterator[str]:
    """Every GLOBAL / STACK_GLOBAL of the file's pickles: each ``*.pkl`` member of a zip
    checkpoint, or the successive pickles at the start of a legacy one."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                for name in archive.namelist():
                    if name.endswith(".pkl"):
                        yield from _globals(pickletools.genops(archive.read(name)))
            return
        with open(path, "rb") as handle:
            for _ in range(LEGACY_PICKLES):
                yield from _globals(pickletools.genops(handle))
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, pickle.PickleError):
        return  # the rest is not a readable pickle: what was read so far is all there is


def _globals(ops: Iterable[tuple[pickletools.OpcodeInfo, object, int | None]]) -> Iterator[str]:
    """The globals one pickle loads. ``STACK_GLOBAL`` (protocol 4+) takes its module and name
    from the two strings pushed before it, directly or from the memo."""
    strings: list[str | None] = []
    memo: dict[object, str | None] = {}
    last: str | None = None  # the string the previous opcode left on top of the stack
    for opcode, arg, _ in ops:
        name = opcode.name
        if name == "GLOBAL":
            yield _python3_name(*str(arg).split(" ", 1))
        elif name == "STACK_GLOBAL":
            module, attribute = strings[-2:] if len(strings) >= 2 else [None, None]
            yield f"{module}.{attribute}" if module and attribute else "<a computed global>"
        if name in STRING_OPS:
            last = arg if isinstance(arg, str) else None
            strings.append(last)
        elif name in GET_OPS:
            last = memo.get(arg)
            strings.append(last)
        elif name in PUT_OPS:
            memo[arg] = last
        elif name == "MEMOIZE":
            memo[len(memo)] = last
        else:
            last = None


def _python3_name(module: str, name: str) -> str:
    """``module.name`` as Python 3 unpickles it: protocol 2 pickles use Python 2's names
    (``__builtin__.exec`` for ``builtins.exec``), mapped back as ``pickle`` does."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        module, name = _compat_pickle.NAME_MAPPING[(module, name)]
    else:
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
    return f"{module}.{name}"


def unpickling_error(error: BaseException) -> pickle.UnpicklingError | None:
    """The :class:`pickle.UnpicklingError` that ``error`` is or was raised from, if any (torch
    raises it when its weights-only unpickler refuses a file; libraries may wrap it)."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, pickle.UnpicklingError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def load_error(spec: str, path: Path, what: str, error: Exception) -> ValueError:
    """One clear line for a checkpoint that could not be loaded: refused for holding Python
    code objects, unreadable or damaged, or not matching ``what`` (the architecture)."""
    if unpickling_error(error) is not None:
        references = code_references(path)
        if references:
            shown = ", ".join(references[:3]) + (", ..." if len(references) > 3 else "")
            return ValueError(
                f"{spec}: {path} contains Python code objects ({shown}), not only weights; it "
                "was refused for safety, since loading it could run code from the file (save "
                "the model's state_dict, or convert it to safetensors)"
            )
        return ValueError(
            f"{spec}: {path} is not a readable PyTorch checkpoint (corrupt or another format): "
            "its pickle could not be read"
        )
    message = f"{type(error).__name__}: {' '.join(str(error).split())}"[:300]
    if isinstance(error, SafetensorError):  # its header or tensors cannot be read
        return ValueError(
            f"{spec}: {path} is a damaged safetensors file ({' '.join(str(error).split())}); "
            "download or copy it again"
        )
    if not (_is_torch_archive(path) or path.suffix == ".safetensors"):
        return ValueError(
            f"{spec}: {path} is not a readable PyTorch checkpoint "
            f"(corrupt or another format): {message}"
        )
    return ValueError(f"{spec}: the weights in {path} do not match {what}: {message}")


def check_archive(spec: str, path: Path) -> None:
    """Refuse a zip checkpoint (``torch.save``, TorchScript) whose members fail their CRC-32:
    torch reads the bytes without checking, so a corrupted file would load and answer NaN or
    nonsense. One sequential read of the file, before the model is built."""
    if not zipfile.is_zipfile(path):
        return
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise ValueError(f"{spec}: {path} is a damaged zip checkpoint ({error})") from None
    if bad is not None:
        raise ValueError(
            f"{spec}: {path} is corrupt: its member {bad!r} fails the zip CRC check "
            "(download or copy the checkpoint again)"
        )


def is_torchscript(path: Path) -> bool:
    """Whether ``path`` is a TorchScript archive (a zip with ``constants.pkl`` and code)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith("/constants.pkl") for name in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def _is_torch_archive(path: Path) -> bool:
    """Whether ``path`` is a complete zip archive, the format of ``torch.save`` and TorchScript."""
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.testzip() is None
    except (zipfile.BadZipFile, OSError):
        return False
