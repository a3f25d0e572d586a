"""``imagefolder``: any folder of class sub-folders (``<root>[/<split>]/<class>/<image>``)."""

from __future__ import annotations

import logging
from pathlib import Path

from wca.datasets.base import Dataset, class_folders, find_layout, register, scan_class_folders
from wca.datasets.names import checked_classnames
from wca.descriptions import load_classnames

log = logging.getLogger("wca")


@register("imagefolder")
def imagefolder(
    root: str | Path,
    split: str | None = None,
    *,
    classnames_file: str | Path | None = None,
    descriptions_name: str | None = None,
    descriptions_dir: str | Path | None = None,
) -> Dataset:
    """Any folder of class sub-folders, ``<root>[/<split>]/<class>/<image>``.

    Labels are the sorted class folders, those holding images: a folder without any (a
    run's ``results/``) is not a class. ``split`` names a sub-folder of ``root``. A root whose
    only such folder is ``images/`` (a ``wca demo --export`` folder) is read from there.

    Class names are the folder names (``_`` as spaces) or, with ``classnames_file`` (a JSON list
    or a text file with one name per line), that file's names for the sorted folders. With
    ``descriptions_name`` the names are checked against that folder's ``classnames.json``.
    """
    layout = "<root>/<class>/<image>" if split is None else f"<root>/{split}/<class>/<image>"
    folder = Path(root) / split if split is not None else Path(root)
    # a `wca demo --export` folder keeps its image folder in images/, beside its texts
    folder = find_layout(
        folder,
        layout,
        lambda path: class_folders(path, with_images=True) not in ([], ["images"]),
        ["images"],
    )
    classes = class_folders(folder, with_images=True)
    others = sorted(set(class_folders(folder)) - set(classes))
    if others:  # e.g. the results/ a run wrote beside the classes
        log.info(f"{folder}: folders without images are not classes: {', '.join(others)}")
    paths, labels = scan_class_folders(folder, {name: i for i, name in enumerate(classes)})
    names = classes
    if classnames_file is not None:
        names = load_classnames(classnames_file)
        if len(names) != len(classes):
            raise ValueError(
                f"{classnames_file}: {len(names)} class names for {len(classes)} class folders "
                f"in {folder}"
            )
    if descriptions_name is not None:
        names = checked_classnames(names, descriptions_name, descriptions_dir, folder)
    else:
        names = [" ".join(name.replace("_", " ").split()) for name in names]
    return Dataset(
        name="imagefolder",
        split=split or "all",
        root=folder,
        paths=paths,
        labels=labels,
        classnames=names,
        descriptions_name=descriptions_name,
    )
