"""The paper's protocol as a library: every shipped config (the WCA authors' settings of each
dataset) x every model, all six methods, one result file per cell, resumable.

>>> plan = reproduce.plan("~/data/{dataset}", RunOptions(descriptions_dir="shared/descriptors"))
>>> for need in plan.needs(): print(need)        # data, texts and weights, nothing computed
>>> summaries = plan.run()                         # cells already complete are skipped

ImageNet and its variants score with the published name lists (which repeat two names) and,
as no CuPL set of the WCA authors is public, CuPL's own ``imagenet_prompts_base.json`` where the
descriptions directory has it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from wca import sweep
from wca.defaults import IMAGENET_FAMILY
from wca.errors import SettingError
from wca.options import RunOptions

PAPER_MODELS = ("ViT-B-32/openai", "ViT-B-16/openai", "ViT-L-14/openai")
CELL_OUTPUT = "{dataset}__{model}__{protocol}.json"
IMAGENET_CUPL = Path("cupl-original") / "imagenet_prompts_base.json"


@dataclass(frozen=True)
class Need:
    """One thing a reproduction needs (a dataset and its texts, a model's weights), where it
    is, and whether it is there (``status`` starts with ``ok``)."""

    what: str
    where: str
    status: str

    @property
    def ok(self) -> bool:
        return self.status.startswith("ok")


@dataclass
class Plan:
    """The cells of every config (or why a config cannot run), each config's run options, the
    models and the output folder."""

    cells: dict[Path, list | Exception]
    options: dict[Path, RunOptions]
    models: list[str]
    output_dir: Path
    ready: list[Path] = field(default_factory=list)  # configs whose data and texts are there

    def needs(self) -> list[Need]:
        """What the run needs: each dataset's folder and texts (read as its cells would,
        nothing computed), each model's weights (on disk, or to be downloaded). Fills
        :attr:`ready`."""
        from wca.specs import weights_file

        needs, self.ready = [], []
        for config, cells in self.cells.items():
            what = f"dataset {config.stem}"
            if isinstance(cells, Exception):
                needs.append(Need(what, "-", f"missing: {sweep.one_line(cells)}"))
                continue
            where = str(cells[0].config.data_root)
            try:
                prepared = cells[0].prepare(self.options[config])
            except (OSError, ValueError, KeyError) as error:
                needs.append(Need(what, where, f"missing: {sweep.one_line(error)}"))
                continue
            images = len(prepared.dataset)
            needs.append(Need(what, where, f"ok: {images} images; texts {prepared.source}"))
            self.ready.append(config)
        for spec in self.models:
            try:
                found = weights_file(spec)
            except Exception as error:  # an architecture open_clip does not know, ...
                needs.append(Need(f"weights {spec}", "-", f"unknown: {sweep.one_line(error)}"))
                continue
            if found is None:
                status = "not on disk: downloaded when first used (needs the network)"
            else:
                status = "ok" if Path(found).exists() else "missing: no such file or folder"
            needs.append(Need(f"weights {spec}", found or "-", status))
        return needs

    def run(self, on_config=None) -> dict[Path, sweep.Summary]:
        """Run the cells of every ready config (:meth:`needs` first), skipping the cells whose
        file is complete with the same settings; ``on_config(config)`` is told as each starts."""
        if not self.ready:
            self.needs()
        summaries = {}
        for config in self.ready:
            if on_config is not None:
                on_config(config)
            summaries[config] = sweep.run(
                self.cells[config], self.options[config], skip_existing=True, overwrite=True
            )
        return summaries


def model_specs(names: list[str] | None = None) -> list[str]:
    """The specs of ``names`` in the one grammar of :mod:`wca.specs` (``ARCH/TAG`` is
    ``open_clip:ARCH/TAG``); comma-separated lists allowed (default: the paper's three
    models)."""
    from wca.specs import canonical

    names = [name.strip() for text in names or [",".join(PAPER_MODELS)] for name in text.split(",")]
    return [canonical(name) for name in names if name]


def config_files(folder: Path | None = None, datasets: list[str] | None = None) -> list[Path]:
    """The config files of the run, every one of the folder (default: those shipped with wca)
    or those of ``datasets``."""
    from wca.configs import PACKAGED_CONFIGS

    folder = PACKAGED_CONFIGS if folder is None else Path(folder)
    files = {path.stem: path for path in sorted(folder.glob("*.yaml"))}
    if not files:
        raise SettingError("configs", f"{folder}: no *.yaml config files")
    if not datasets:
        return list(files.values())
    unknown = [name for name in datasets if name not in files]
    if unknown:
        raise SettingError(
            "datasets",
            f"no config for {', '.join(unknown)} in {folder} (configs: {', '.join(files)})",
        )
    return [files[name] for name in datasets]


def config_options(options: RunOptions, config: Path, descriptions: str | None, dataset: str):
    """The run options of one config: ImageNet and its variants score with the published name
    lists (which repeat names) and CuPL's own ImageNet sentences where the descriptions
    directory has them; ``descriptions`` (a template with ``{dataset}``) replaces the texts."""
    from wca.datasets import resolve_descriptions_dir

    if config.stem in IMAGENET_FAMILY:
        cupl = resolve_descriptions_dir(options.descriptions_dir)[0] / IMAGENET_CUPL
        options = options.model_copy(
            update={
                "allow_duplicate_classes": True,
                "descriptions": cupl if cupl.is_file() else None,
            }
        )
    if descriptions is None:
        return options
    path = Path(descriptions.replace("{dataset}", dataset)).expanduser().resolve()
    return options.model_copy(update={"descriptions": path})


def plan(
    data_root: str,
    options: RunOptions | None = None,
    *,
    models: list[str] | None = None,
    datasets: list[str] | None = None,
    configs: Path | None = None,
    output_dir: Path = Path("results") / "paper",
    descriptions: str | None = None,
) -> Plan:
    """Plan a reproduction: ``data_root`` with ``{dataset}`` for each config's dataset name;
    ``descriptions`` a template of the texts of each dataset (``{dataset}`` needed for more
    than one)."""
    if "{dataset}" not in data_root:
        raise SettingError("data_root", f"{data_root}: put {{dataset}} where each name goes")
    options = RunOptions() if options is None else options
    files = config_files(configs, datasets)
    if descriptions and "{dataset}" not in descriptions and len(files) > 1:
        raise SettingError(
            "descriptions",
            f"{descriptions}: put {{dataset}} where each name goes ({len(files)} datasets)",
        )
    specs = model_specs(models)
    cells: dict[Path, list | Exception] = {}
    for config in files:
        try:
            cells[config] = sweep.plan(
                specs, None, [data_root], template=str(output_dir / CELL_OUTPUT), config_file=config
            )
        except (FileNotFoundError, ValueError) as error:
            cells[config] = error
    of_config = {}
    for config, planned in cells.items():
        dataset = config.stem if isinstance(planned, Exception) else str(planned[0].config.dataset)
        of_config[config] = config_options(options, config, descriptions, dataset)
    return Plan(cells, of_config, specs, output_dir)
