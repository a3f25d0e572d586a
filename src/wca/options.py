"""How a run runs, as opposed to what it computes: device, precision, batch sizes, workers,
cache folders, where texts come from, what to do with an unreadable image.

The numbers of an evaluation are fixed by its :class:`wca.config.EvalConfig` (dataset, model,
crops, methods, protocol) and, to the last digits, by the precision; the options here never
change them otherwise. One frozen :class:`RunOptions` serves the Python API, ``wca eval``,
``wca extract`` and ``wca reproduce``, with the same defaults (:mod:`wca.defaults`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from wca import defaults
from wca.errors import SettingError

BadImagePolicy = Literal["stop", "skip"]


class RunOptions(BaseModel):
    """The options of a run (see the module doc). ``batch_size`` None: the config's (the
    authors' YAML may set one), else :data:`wca.defaults.BATCH_SIZE`. ``cache_dir`` None: keep
    features in memory only. ``descriptions``: a folder laid out like one dataset of
    ``descriptions_dir`` (replaces it) or a ``{class: [sentence, ...]}`` JSON (replaces the
    sentences of cupl and wca). ``bad_images``: ``stop`` at the first unreadable image, or
    ``skip`` it (named, listed in the result, left out of the accuracy)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    device: str = defaults.DEVICE
    precision: Literal["fp32", "fp16", "bf16"] = defaults.PRECISION
    batch_size: Annotated[int, Field(ge=1)] | None = None
    num_workers: Annotated[int, Field(ge=0)] = defaults.NUM_WORKERS
    shard_size: Annotated[int, Field(ge=1)] = defaults.SHARD_SIZE
    views_on_device: bool | None = None  # None: on for CUDA (fast views)
    cache_dir: Path | None = Field(default_factory=lambda: defaults.cache_dir("features"))
    dist_timeout: Annotated[float, Field(gt=0)] | None = None
    descriptions_dir: Path | None = None
    descriptions: Path | None = None
    bad_images: BadImagePolicy = "stop"
    allow_duplicate_classes: bool = False
    progress: bool = True

    def __init__(self, **values) -> None:
        try:
            super().__init__(**values)
        except ValidationError as error:
            first = error.errors()[0]
            setting = ".".join(map(str, first["loc"])) or "options"
            message = first["msg"].removeprefix("Value error, ")
            got = f", got {first['input']!r}" if "input" in first and first["loc"] else ""
            raise SettingError(setting, f"{message}{got}") from None
