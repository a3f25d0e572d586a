"""Explanations of several images written to a folder: two PNGs and a JSON per image, and one
self-contained ``index.html`` (images inlined) that opens in a browser without a server."""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Sequence
from pathlib import Path

from wca.classifier import WCAClassifier
from wca.explain.evidence import ImageLike, as_image
from wca.explain.figures import descriptions_figure
from wca.explain.record import explanation_record
from wca.explain.where import where_figure
from wca.files import write_atomic


def write_explanations(
    classifier: WCAClassifier,
    images: Sequence[ImageLike],
    out_dir: str | Path,
    label: str | Sequence[str | None] | None = None,
    top_k: int = 3,
) -> list[Path]:
    """Explain every image: ``NAME-descriptions.png``, ``NAME-where.png`` and ``NAME.json``
    (NAME: the file's stem, else ``image-<n>``), then ``index.html`` with all of them.

    ``label`` is the true class of every image, or one (or None) per image; ``top_k`` is how
    many classes the JSON and the page list with their descriptions. Returns the files written,
    ``index.html`` last.
    """
    labels = _labels(label, len(images))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pictures = [as_image(image) for image in images]
    predictions = classifier.predict(pictures, top_k=max(top_k, 2))
    written, sections = [], []
    for name, picture, prediction, truth in zip(
        _names(images), pictures, predictions, labels, strict=True
    ):
        record = explanation_record(prediction, classifier, truth, top_k)
        figures = {
            f"{name}-descriptions.png": descriptions_figure(picture, prediction, classifier, truth),
            f"{name}-where.png": where_figure(picture, prediction, classifier),
        }
        for filename, figure in figures.items():
            figure.savefig(out / filename)
            written.append(out / filename)
        document = json.dumps({"image": name, **record}, indent=1) + "\n"
        _write_text(out / f"{name}.json", document)
        written.append(out / f"{name}.json")
        sections.append(_section(name, record, [out / f for f in figures], top_k))
    page = out / "index.html"
    _write_text(page, _page(sections))
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


def _names(images: Sequence[ImageLike]) -> list[str]:
    """File stems for paths, ``image-<n>`` otherwise; repeated names get ``-2``, ``-3``..."""
    names, seen = [], {}
    for n, image in enumerate(images, 1):
        base = Path(image).stem if isinstance(image, str | Path) else f"image-{n}"
        seen[base] = seen.get(base, 0) + 1
        names.append(base if seen[base] == 1 else f"{base}-{seen[base]}")
    return names


def _inline(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _section(name: str, record: dict, pictures: list[Path], top_k: int) -> str:
    rows = "".join(
        f"<tr><td>{c['rank']}</td><td>{html.escape(c['name'])}</td>"
        f"<td>{c['probability']:.3f}</td><td>{c['score']:.4f}</td></tr>"
        for c in record["classes"][:top_k]
    )
    truth = ""
    if record["label"] is not None:
        verdict = "correct" if record["correct"] else "wrong"
        truth = f"<p>true class: <b>{html.escape(record['label'])}</b> ({verdict})</p>"
    figures = "".join(
        f'<figure><img src="{_inline(p)}" alt="{html.escape(p.name)}">'
        f"<figcaption>{html.escape(p.name)}</figcaption></figure>"
        for p in pictures
    )
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


def _page(sections: list[str]) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>wca explanations</title><style>{STYLE}</style></head><body>"
        "<h1>Why WCA chose these classes</h1>"
        "<p>Per image: each description's <i>local match (WCA)</i>, the crop-weighted "
        "similarity of the image's crops, beside its <i>whole image (CLIP-D)</i> similarity; "
        "then where on the image the top descriptions match and where WCA's crop weights "
        "lie.</p>" + "".join(sections) + "</body></html>\n"
    )
