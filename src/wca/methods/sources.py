"""What the methods read about the classes of one task: names, sentences, descriptors,
templates and word lists, from a folder laid out like the published description sets."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from wca.descriptions.io import load_classnames, load_descriptions, load_templates, load_words


@dataclass
class TextSources:
    """Everything the methods read about the classes of one task.

    ``classnames_for`` overrides the names for one method (ImageNet: the OpenAI names for
    clip-d and waffle, the CuPL names elsewhere). ``dataset`` is the task's dataset name
    (``cub``, ``imagenet-r``...), for methods whose authors prompt each dataset differently
    (AWT); None for other images. ``origins`` names the file of each kind of text, so that an
    error names it (not part of the texts' digest).
    """

    classnames: list[str]
    sentences: dict[str, list[str]] | None = None  # CuPL sentences, also WCA's descriptions
    descriptors: dict[str, list[str]] | None = None  # CLIP-D descriptor phrases
    templates: list[str] | None = None  # CLIP-E templates with "{}"
    words: list[str] | None = None  # WaffleCLIP word list
    classnames_for: dict[str, list[str]] = field(default_factory=dict)
    dataset: str | None = None
    origins: dict[str, str] = field(default_factory=dict)  # kind of text -> the file it came from

    def names(self, method: str) -> list[str]:
        return self.classnames_for.get(method, self.classnames)

    def origin(self, kind: str, default: str) -> str:
        """The file the texts of ``kind`` (``sentences``, ``descriptors``...) came from, for
        messages; ``default`` (the method) when they came from no file."""
        return self.origins.get(kind, default)


def load_text_sources(directory: str | Path, classnames: list[str] | None = None) -> TextSources:
    """Read a descriptions folder laid out like the published sets: ``cupl.json``,
    ``clip-d.json``, ``clip-e.json``, ``classnames*.json``, and ``waffle-words.json`` beside it.

    Class names are ``classnames`` when given, else the folder's ``classnames-cupl.json`` or
    ``classnames.json``; a ``classnames-openai.json`` then serves clip-d and waffle.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: descriptions folder not found")

    def read(name: str, loader: Callable, folder: Path = directory):
        return loader(folder / name) if (folder / name).is_file() else None

    classnames_for = {}
    if classnames is None:
        classnames = read("classnames-cupl.json", load_classnames) or read(
            "classnames.json", load_classnames
        )
        openai_names = read("classnames-openai.json", load_classnames)
        if openai_names:
            classnames_for = {"clip-d": openai_names, "waffle": openai_names}
    if not classnames:
        raise FileNotFoundError(f"{directory}: no classnames.json, and no class names given")
    files = {
        "sentences": directory / "cupl.json",
        "descriptors": directory / "clip-d.json",
        "templates": directory / "clip-e.json",
        "words": directory.parent / "waffle-words.json",
    }
    return TextSources(
        classnames=list(classnames),
        sentences=read("cupl.json", load_descriptions),
        descriptors=read("clip-d.json", load_descriptions),
        templates=read("clip-e.json", load_templates),
        words=read("waffle-words.json", load_words, directory.parent),
        classnames_for=classnames_for,
        origins={kind: str(path) for kind, path in files.items() if path.is_file()},
    )
