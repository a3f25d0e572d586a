"""How a run runs, as opposed to what it computes: device, precision, batch sizes, workers,
cache folders, where texts come from, the image-size guard, what to do with an unreadable image.

The numbers of an evaluation are fixed by its :class:`wca.config.EvalConfig` (dataset, model,
crops, methods, protocol) and, to the last digits, by the precision; the options here never
change them otherwise. One frozen :class:`RunOptions` serves the Python API, ``wca eval``,
``wca extract`` and ``wca reproduce``, with the same defaults (:mod:`wca.defaults`). Each field
carries its help and group, from which the command line's flags are made
(:mod:`wca.cli.settings`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from wca import defaults
from wca.compat import RENAMED_SETTINGS, renamed
from wca.errors import SettingError

BadImagePolicy = Literal["stop", "skip"]
MAX_PIXELS_ENV = "WCA_MAX_IMAGE_PIXELS"  # 0 or "none": no limit


def _default_max_pixels() -> int:
    """``$WCA_MAX_IMAGE_PIXELS``, else PIL's limit (0: no limit)."""
    value = os.environ.get(MAX_PIXELS_ENV, "").strip().lower()
    if not value:
        return defaults.MAX_IMAGE_PIXELS
    if value == "none":
        return 0
    try:
        return int(value)
    except ValueError:
        message = f"${MAX_PIXELS_ENV}={value!r} is not a number"
        raise SettingError("max_image_pixels", message) from None


def _group(name: str, **extra: Any) -> dict[str, Any]:
    return {"group": name, **extra}


class RunOptions(BaseModel):
    """The options of a run (see the module doc); an invalid value raises a
    :class:`~wca.errors.SettingError` naming the option."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    device: str = Field(
        defaults.DEVICE,
        description="auto (cuda, mps, cpu), cpu, cuda:0, ...",
        json_schema_extra=_group("run"),
    )
    precision: Literal["fp32", "fp16", "bf16"] = Field(
        defaults.PRECISION,
        description="model precision (fp16 on GPUs only)",
        json_schema_extra=_group("run", identity=True),
    )
    batch_size: Annotated[int, Field(ge=1)] = Field(
        defaults.BATCH_SIZE,
        description="views per encoder pass (no effect on results)",
        json_schema_extra=_group("run", metavar="N"),
    )
    num_workers: Annotated[int, Field(ge=0)] = Field(
        defaults.NUM_WORKERS,
        description="loader processes decoding images and making crops (0: one background thread)",
        json_schema_extra=_group("run", metavar="N"),
    )
    shard_size: Annotated[int, Field(ge=1)] = Field(
        defaults.SHARD_SIZE,
        description="images per feature-cache shard",
        json_schema_extra=_group("run", metavar="N"),
    )
    views_on_device: bool | None = Field(
        None,
        description="decode on the CPU, cut and resize the views on the model's device",
        json_schema_extra=_group("run", shown="on for CUDA"),
    )
    lock_timeout: Annotated[float, Field(gt=0)] = Field(
        defaults.LOCK_TIMEOUT,
        description="seconds to wait for a feature-cache shard that another process holds "
        "without progress (stopped or hung; holders mark progress about once a second) before "
        "failing, naming it",
        json_schema_extra=_group("run", metavar="SECONDS"),
    )
    lock_takeover: bool = Field(
        False,
        description="take such a shard over instead of failing (its holder, if it resumes, "
        "writes the same bytes)",
        json_schema_extra=_group("run"),
    )
    dist_timeout: Annotated[float, Field(gt=0)] | None = Field(
        None,
        description="under torchrun: seconds a rank waits for the others before failing, naming "
        "them",
        json_schema_extra=_group("run", metavar="SECONDS", shown="$WCA_DIST_TIMEOUT, else 1800"),
    )
    cache_dir: Path | None = Field(
        default_factory=lambda: defaults.cache_dir("features"),
        description="the feature cache ('none': features in memory only)",
        json_schema_extra=_group(
            "data", metavar="DIR", shown="$WCA_CACHE_DIR/features, else ~/.cache/wca/features"
        ),
    )
    descriptions_dir: Path | None = Field(
        None,
        description="description sets laid out <dataset>/cupl.json, clip-d.json, clip-e.json, "
        "classnames.json (`wca descriptions fetch` fills it)",
        json_schema_extra=_group(
            "data", metavar="DIR", shown="$WCA_DESCRIPTIONS_DIR, else ~/.cache/wca/descriptions"
        ),
    )
    descriptions: Path | None = Field(
        None,
        description="texts for this run: a folder laid out like one dataset of "
        "descriptions_dir (replaces it), or a {class: [sentence, ...]} JSON (replaces the "
        "sentences of cupl and wca)",
        json_schema_extra=_group("data", metavar="PATH", shown="the dataset's published set"),
    )
    download: bool = Field(
        False,
        description="download a torchvision dataset (cifar10, stl10, ...) into the data root "
        "when it is not there",
        json_schema_extra=_group("data"),
    )
    max_image_pixels: Annotated[int, Field(ge=0)] = Field(
        default_factory=_default_max_pixels,
        description="refuse images larger than this many pixels (width x height), a guard "
        "against decompression bombs (0: no limit)",
        json_schema_extra=_group("data", metavar="N", shown=f"${MAX_PIXELS_ENV}, else PIL's "
                                 f"{defaults.MAX_IMAGE_PIXELS}"),  # fmt: skip
    )
    allow_duplicate_classes: bool = Field(
        False,
        description="score class lists with repeated names (ImageNet's published names repeat "
        "'missile' and 'sunglasses')",
        json_schema_extra=_group("protocol"),
    )
    bad_images: BadImagePolicy = Field(
        "stop",
        description="an unreadable image: stop at it, or skip it (named, listed in the result, "
        "left out of the accuracy)",
        json_schema_extra=_group("output"),
    )
    progress: bool = Field(True, description="progress bars", json_schema_extra=_group("output"))

    def __init__(self, **values: Any) -> None:
        values = renamed(values, RENAMED_SETTINGS, "RunOptions")
        try:
            super().__init__(**values)
        except ValidationError as error:
            first = error.errors()[0]
            setting = ".".join(map(str, first["loc"])) or "options"
            message = first["msg"].removeprefix("Value error, ")
            got = f", got {first['input']!r}" if "input" in first and first["loc"] else ""
            raise SettingError(setting, f"{message}{got}") from None

    @field_validator("cache_dir", mode="before")
    @classmethod
    def _no_cache(cls, value: Any) -> Any:
        """``none`` (or empty), as text or as the flag's path: features in memory only."""
        empty = isinstance(value, str | Path) and str(value).strip().lower() in ("", "none")
        return None if empty else value

    @field_validator("cache_dir", "descriptions_dir", "descriptions")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        """Paths made absolute once (the same folders from any working directory)."""
        return None if value is None else value.expanduser().resolve()
