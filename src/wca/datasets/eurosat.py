"""``eurosat``: the RGB EuroSAT images (27000 Sentinel-2 patches, 10 classes).

The archive extracts to ``2750/<class>/`` (older ``EuroSAT.zip``) or ``EuroSAT_RGB/<class>/``;
torchvision's EuroSAT downloads to ``eurosat/2750``. All three are found from their parent.
EuroSAT has no official split: ``all`` (default) is every image; ``train``, ``val`` and
``test`` read the split file that CoOp introduced and later zero-shot work reuses
(``split_zhou_EuroSAT.json``: ``{"test": [[<class>/<image>, <label>, <name>], ...], ...}``).
Labels are the sorted class folders. Class names are those of the authors' EuroSAT description
files (``AnnualCrop`` is "annual crop land"), since the folder names are not English phrases.
"""

from __future__ import annotations

from pathlib import Path

from wca.datasets.base import (
    Dataset,
    check_split,
    class_folders,
    find_layout,
    register,
    scan_class_folders,
)
from wca.datasets.names import checked_classnames
from wca.descriptions.io import read_json

CLASSNAMES = {
    "AnnualCrop": "annual crop land",
    "Forest": "forest",
    "HerbaceousVegetation": "brushland or shrubland",
    "Highway": "highway or road",
    "Industrial": "industrial buildings or commercial buildings",
    "Pasture": "pasture land",
    "PermanentCrop": "permanent crop land",
    "Residential": "residential buildings or homes or apartments",
    "River": "river",
    "SeaLake": "lake or sea",
}
SPLIT_FILE = "split_zhou_EuroSAT.json"
LAYOUT = "<root>[/2750 | /EuroSAT_RGB | /eurosat/2750]/<class>/<image> with the classes " + (
    ", ".join(CLASSNAMES)
)


def _split_entries(path: Path, split: str) -> list[str]:
    """The ``<class>/<image>`` paths of ``split`` in a CoOp split file."""
    try:
        data = read_json(path)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{path}: no such file; the {split} split of eurosat needs CoOp's {SPLIT_FILE} "
            "(pass split_file, or use split 'all')"
        ) from None
    entries = data.get(split) if isinstance(data, dict) else None
    if not isinstance(entries, list) or not all(
        isinstance(entry, list) and entry and isinstance(entry[0], str) for entry in entries
    ):
        raise ValueError(f"{path}: no '{split}' list of [<class>/<image>, label, name] entries")
    return [entry[0] for entry in entries]


@register("eurosat", splits=("all", "train", "val", "test"))
def eurosat(
    root: str | Path,
    split: str | None = None,
    *,
    split_file: str | Path | None = None,
    descriptions_dir: str | Path | None = None,
) -> Dataset:
    """Every image (``all``, default) or CoOp's ``train``/``val``/``test`` split of EuroSAT.

    ``split_file`` defaults to ``split_zhou_EuroSAT.json`` in ``root`` or beside the image folder.
    """
    split = check_split("eurosat", split)
    folder = find_layout(
        root,
        LAYOUT,
        lambda path: path.is_dir() and set(CLASSNAMES) <= set(class_folders(path)),
        ("2750", "EuroSAT_RGB", "eurosat/2750"),
    )
    classes = class_folders(folder)
    unknown = sorted(set(classes) - set(CLASSNAMES))
    if unknown:
        raise ValueError(f"{folder}: unexpected class folders {unknown}; expected {LAYOUT}")
    index = {name: i for i, name in enumerate(classes)}
    if split == "all":
        paths, labels = scan_class_folders(folder, index)
    else:
        if split_file is None:
            candidates = [Path(root).expanduser() / SPLIT_FILE, folder.parent / SPLIT_FILE]
            split_file = next((path for path in candidates if path.is_file()), candidates[0])
        relative = _split_entries(Path(split_file), split)
        bad = [entry for entry in relative if entry.split("/")[0] not in index]
        if bad:
            raise ValueError(f"{split_file}: entries {bad[:5]} are not <class>/<image>")
        paths = [folder / entry for entry in relative]
        labels = [index[entry.split("/")[0]] for entry in relative]
    return Dataset(
        name="eurosat",
        split=split,
        root=folder,
        paths=paths,
        labels=labels,
        classnames=checked_classnames(
            [CLASSNAMES[name] for name in classes], "eurosat", descriptions_dir, folder
        ),
        descriptions_name="eurosat",
    )
