"""Old spellings that still work, in one place, each with a one-line deprecation notice.

wca 0.4 gave every setting one name across the API, config files, the command line and result
files (``n_crops``, ``crop_strategy``, ``data_root``, ``fp16_cache``,
``allow_duplicate_classes``). The names of wca 0.1-0.3 below are accepted until **wca 0.6**,
when this module goes. (The WCA authors' own config keys, ``model_size``, ``data_path``,
``n_samples`` and ``batch_size``, are not deprecated: their files are an input format, read by
:func:`wca.configs.authors_file`.)
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

REMOVED_IN = "0.6"
# Settings of the evaluation config and run options: old name -> name.
RENAMED_SETTINGS = {
    "n_samples": "n_crops",
    "data_path": "data_root",
    "half": "fp16_cache",
    "allow_duplicates": "allow_duplicate_classes",
}
# Flags of wca 0.3 that still parse: old flag -> the flag (and value) to use.
RENAMED_FLAGS = {
    "--n-samples": "--n-crops",
    "--crops": "--n-crops",
    "--runs": "--n-run",
    "--out": "--output",
    "--skip-bad-images": "--bad-images skip",
    "--no-cache": "--cache-dir none",
}


def notice(old: str, new: str, where: str) -> None:
    """One deprecation line: ``where: OLD is deprecated, use NEW (OLD goes in wca 0.6)``."""
    warnings.warn(
        f"{where}: {old} is deprecated, use {new} ({old} goes in wca {REMOVED_IN})",
        FutureWarning,
        stacklevel=4,
    )


def renamed_flags(argv: list[str], where: str = "wca") -> list[str]:
    """``argv`` with the old flags of :data:`RENAMED_FLAGS` spelled anew (a notice each)."""
    out = []
    for token in argv:
        flag, equals, value = token.partition("=")
        if flag in RENAMED_FLAGS:
            notice(flag, RENAMED_FLAGS[flag], where)
            out += RENAMED_FLAGS[flag].split() + ([value] if equals else [])
        else:
            out.append(token)
    return out


def renamed(values: Mapping[str, Any], names: Mapping[str, str], where: str) -> dict[str, Any]:
    """``values`` with the old keys of ``names`` renamed (a notice for each); a value given
    under both names is an error."""
    values = dict(values)
    for old, new in names.items():
        if old in values:
            if new in values:
                raise ValueError(f"{where}: {old} and {new} are one setting; give {new} only")
            notice(old, new, where)
            values[new] = values.pop(old)
    return values


_CROPS_02 = ("n_samples", "alpha", "beta", "seed", "strategy")
_OPTIONS_02 = ("cache_dir", "batch_size", "num_workers", "shard_size", "views_on_device")
_EXTRA_02 = ("fidelity", "half", "verify", "on_bad_image", "ranks")


def extract_arguments(crops_spec: Any, options: Any, given: dict[str, Any]):
    """``extract_features``'s arguments of wca 0.2 (``n_samples, alpha, beta=.., seed=..,
    cache_dir=.., batch_size=..``) as ``(CropSpec, RunOptions, remaining keywords)``, with one
    notice; with a ``CropSpec``, only the old ``half`` keyword (``fp16_cache``)."""
    from wca.crops import CropSpec
    from wca.options import RunOptions

    if isinstance(crops_spec, CropSpec):
        unknown = set(given) - {"half"}
        if unknown:
            raise TypeError(f"extract_features() got unexpected arguments: {', '.join(unknown)}")
        notice("half", "fp16_cache", "extract_features")
        return crops_spec, options, {"fp16_cache": given["half"]}
    values = dict(given)
    if crops_spec is not None:
        values["n_samples"] = crops_spec
    if options is not None:
        values["alpha"] = options
    unknown = set(values) - {*_CROPS_02, *_OPTIONS_02, *_EXTRA_02, "progress"}
    if unknown or "n_samples" not in values or "alpha" not in values:
        missing = [name for name in ("n_samples", "alpha") if name not in values]
        raise TypeError(
            "extract_features(encoder, dataset, crops_spec, options): "
            + (f"unexpected {', '.join(sorted(unknown))}" if unknown else f"missing {missing}")
        )
    notice(
        "extract_features(encoder, dataset, n_samples, alpha, ...)",
        "extract_features(encoder, dataset, CropSpec(n_crops=.., alpha=.., ...), "
        "RunOptions(cache_dir=.., batch_size=.., ...))",
        "wca",
    )
    spec = {"n_crops": values["n_samples"], "alpha": values["alpha"]}
    spec.update({k: values[k] for k in ("beta", "seed") if k in values})
    if "strategy" in values:
        spec["crop_strategy"] = values["strategy"]
    run = {name: values[name] for name in _OPTIONS_02 if values.get(name) is not None}
    run.setdefault("cache_dir", None)
    run["progress"] = values.get("progress", True)
    extra = {name: values[name] for name in _EXTRA_02 if name in values}
    return CropSpec(**spec), RunOptions(**run), extra
