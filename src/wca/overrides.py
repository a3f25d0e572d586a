"""Settings given as text, ``KEY=VALUE`` (``n_crops=60``, ``methods.wca.image_scale=3``), as
the command line's ``--set`` and sweep files give them; :func:`wca.config.resolve_config`
applies them after the file and the flags."""

from __future__ import annotations

from typing import Any

import yaml


def parse_setting(text: str) -> tuple[list[str], Any]:
    """``"a.b=value"`` -> ``(["a", "b"], value)``, the value read as YAML (numbers, booleans)."""
    if "=" not in text:
        raise ValueError(f"setting {text!r} is not KEY=VALUE")
    key, raw = text.split("=", 1)
    path = [part for part in key.strip().split(".") if part]
    if not path:
        raise ValueError(f"setting {text!r} has no key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return path, value
