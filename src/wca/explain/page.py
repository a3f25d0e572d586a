"""Explanations of several images written to a folder: two PNGs and a JSON per image, and one
self-contained ``index.html`` (images inlined) that opens in a browser without a server."""

from __future__ import annotations

import base64
import html
import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

from wca.classifier import Prediction, WCAClassifier
from wca.explain.contrast import TooFewCrops
from wca.explain.evidence import ImageLike, as_image
from wca.explain.figures import descriptions_figure, save_png
from wca.explain.record import explanation_record
from wca.explain.where import WINDOWS, where_figure
from wca.explain.windows import Windows
from wca.files import write_atomic

log = logging.getLogger("wca")


def write_explanations(
    classifier: WCAClassifier,
    images: Sequence[ImageLike],
    out_dir: str | Path,
    label: str | Sequence[str | None] | None = None,
    top_k: int = 3,
    predictions: Sequence[Prediction] | None = None,
    *,
    windows: Windows | None = WINDOWS,
    on_error: Callable[[int, ValueError], None] | None = None,
) -> list[Path]:
    """Explain every image: ``NAME-descriptions.png``, ``NAME-where.png`` and ``NAME.json``
    (NAME: the file's stem, with its folders where stems repeat, else ``image-<n>``), then
    ``index.html`` with all of them. Each JSON names the image's ``source`` file.

    ``label`` is the true class of every image, or one (or None) per image; ``top_k`` is how
    many classes the JSON and the page list with their descriptions. ``predictions``: those
    ``classifier.predict(images)`` already made, to avoid encoding the images again.
    ``windows``: the where-maps' explanation crops (None: WCA's crops). An image that cannot be
    read raises its ``ValueError``, or, given ``on_error``, is passed to it with its position,
    listed on the page as skipped, and the others are explained. An image too small for a
    where-map (a pixel or two: fewer than 3 crops) is explained without one, with a warning
    naming it. Returns the files written, ``index.html`` last.
    """
    labels = _labels(label, len(images))
    if predictions is not None and len(predictions) != len(images):
        raise ValueError(f"{len(predictions)} predictions for {len(images)} images")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pictures, skipped = {}, []
    for position, image in enumerate(images):
        try:
            pictures[position] = as_image(image, classifier.max_image_pixels)
        except ValueError as error:
            if on_error is None:
                raise
            on_error(position, error)
            skipped.append(str(error))
    if predictions is None:
        found = classifier.predict(list(pictures.values()), top_k=max(top_k, 2))
        predictions = dict(zip(pictures, found, strict=True))
    names, sources = _names(images), [_source(image) for image in images]
    written, sections = [], []
    for position, picture in pictures.items():
        name, prediction, truth = names[position], predictions[position], labels[position]
        record = {"image": name, "source": sources[position]}
        record |= explanation_record(prediction, classifier, truth, top_k)
        figures = {
            f"{name}-descriptions.png": descriptions_figure(picture, prediction, classifier, truth)
        }
        note = None
        try:
            where = where_figure(picture, prediction, classifier, windows=windows)
            figures[f"{name}-where.png"] = where
        except TooFewCrops as error:  # a pixel or two: explained without its where-map
            note = f"the image is {picture.width}x{picture.height} ({error})"
            log.warning(f"{sources[position] or name}: explained without a where-map: {note}")
        for filename, figure in figures.items():
            written.append(save_png(figure, out / filename))
        _write_text(out / f"{name}.json", json.dumps(record, indent=1) + "\n")
        written.append(out / f"{name}.json")
        sections.append(_section(name, record, [out / f for f in figures], top_k, note))
    page = out / "index.html"
    _write_text(page, _page(sections, skipped))
    return [*written, page]


def _write_text(path: Path, text: str) -> None:
    write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def _labels(label: str | Sequence[str | None] | None, count: int) -> list[str | None]:
    if label is None or isinstance(label, str):
        return [label] * count
    labels = list(label)
    if len(labels) != count:
        raise ValueError(f"{len(labels)} labels for {count} images")
    return labels


def _source(image: ImageLike) -> str | None:
    """The absolute path of the file an image came from, if it came from one."""
    if isinstance(image, str | Path):
        return str(Path(image).resolve())
    filename = getattr(image, "filename", "")
    return str(Path(filename).resolve()) if filename else None


def _names(images: Sequence[ImageLike]) -> list[str]:
    """Per image a file-name stem: the file's stem, prefixed by as many of its folders as tell
    it from other files of that stem (``cats__00005``, ``dogs__00005``); ``image-<n>`` for an
    image without a file. Names still equal (the same file twice) get ``-2``, ``-3``..."""
    paths = [Path(image).resolve() if isinstance(image, str | Path) else None for image in images]
    tails = {}
    for path in {p for p in paths if p is not None}:
        tails.setdefault(path.stem, []).append(path)
    names, seen = [], {}
    for n, path in enumerate(paths, 1):
        if path is None:
            base = f"image-{n}"
        else:
            rivals = [p for p in tails[path.stem] if p != path]
            depth = 0  # folders in the name
            while depth < len(path.parts) - 1 and any(
                _folders(rival, depth) == _folders(path, depth) for rival in rivals
            ):
                depth += 1
            base = "__".join([*_folders(path, depth), path.stem])
        seen[base] = seen.get(base, 0) + 1
        names.append(base if seen[base] == 1 else f"{base}-{seen[base]}")
    return names


def _folders(path: Path, depth: int) -> tuple[str, ...]:
    """The last ``depth`` folders of ``path``."""
    return path.parts[len(path.parts) - 1 - depth : -1]


def _inline(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _section(
    name: str, record: dict, pictures: list[Path], top_k: int, note: str | None = None
) -> str:
    rows = "".join(
        f"<tr><td>{c['rank']}</td><td>{html.escape(c['name'])}</td>"
        f"<td>{c['probability']:.3f}</td><td>{c['score']:.4f}</td></tr>"
        for c in record["classes"][:top_k]
    )
    source = record["source"]
    truth = f"<p>file: {html.escape(source)}</p>" if source else ""
    if record["label"] is not None:
        verdict = "correct" if record["correct"] else "wrong"
        truth += f"<p>true class: <b>{html.escape(record['label'])}</b> ({verdict})</p>"
    figures = "".join(
        f'<figure><img src="{_inline(p)}" alt="{html.escape(p.name)}">'
        f"<figcaption>{html.escape(p.name)}</figcaption></figure>"
        for p in pictures
    )
    if note is not None:
        figures += f"<p>No where-map: {html.escape(note)}</p>"
    return (
        f'<section id="{html.escape(name)}"><h2>{html.escape(name)}</h2>{truth}'
        "<table><tr><th>rank</th><th>class</th><th>probability</th><th>WCA score</th></tr>"
        f'{rows}</table><p><a href="{html.escape(name)}.json">{html.escape(name)}.json</a>'
        f" (every number)</p>{figures}</section>"
    )


STYLE = (
    "body{font-family:sans-serif;margin:2em;max-width:1800px}img{max-width:100%}"
    "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 8px}"
    "section{border-top:2px solid #888;margin-top:2em}figcaption{color:#555}"
)


def _page(sections: list[str], skipped: list[str]) -> str:
    missing = "".join(f"<li>{html.escape(reason)}</li>" for reason in skipped)
    missing = f"<p>Skipped, unreadable:</p><ul>{missing}</ul>" if skipped else ""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>wca explanations</title><style>{STYLE}</style></head><body>"
        "<h1>Why WCA chose these classes</h1>"
        "<p>Per image: each description's <i>local match (WCA)</i>, the crop-weighted "
        "similarity of the image's crops, beside its <i>whole image (CLIP-D)</i> similarity; "
        "then where on the image the top descriptions match and where WCA's crop weights "
        "lie.</p>" + missing + "".join(sections) + "</body></html>\n"
    )
