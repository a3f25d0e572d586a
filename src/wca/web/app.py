"""The Gradio page: an image and class names in; WCA's top classes beside CLIP's and CLIP-D's,
the explanation figures and the JSON out. ``/classify`` is the same answer for API clients."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import gradio as gr
from matplotlib.figure import Figure

from wca.explain import descriptions_figure, where_figure
from wca.web.inputs import MAX_CROPS, InputError, classnames_text
from wca.web.service import TOP_K, Preloaded, Result, Service

QUEUE_SIZE = 16  # requests waiting at most; more are refused with "queue full"
FIGURES = (
    ("why", "Why: each description's local match (WCA) beside its whole-image match (CLIP-D)"),
    ("where", "Where: WCA's heaviest crops, where it looks and where the top descriptions match"),
)
INTRO = """\
# WCA: zero-shot classification by weighted visual-text cross alignment

Drop an image and name your classes. WCA (Li et al., ICML 2024) scores N random crops
of the image against descriptions of every class, each crop weighted by its similarity to the
whole image; beside it, CLIP ("a photo of a {{class}}.") and CLIP-D on the same image. Model:
{model}.
"""
TEXTS_HELP = """\
**Descriptions**: a JSON file `{{"class": ["description", ...]}}` (CuPL sentences or
`wca describe` output) with every class. Without one, {preloaded}classes without descriptions
are scored with the plain CLIP prompt "a photo of a {{class}}." (the page says which).
**CLIP-D descriptors** (optional, a `clip-d.json` of short phrases): without them for every
class, the third column is CuPL (the mean embedding of WCA's descriptions) instead of CLIP-D.
"""


def upload_path(payload: dict | None) -> str | None:
    """The file of an upload as the browser or ``gradio_client`` sent it (the events run with
    ``preprocess=False``, so every check of the file is ours and shows as a message)."""
    if payload is None:
        return None
    if not payload.get("path"):
        raise InputError("the upload did not arrive as a file: upload it again")
    return payload["path"]


def messages(function: Callable) -> Callable:
    """Show a visitor's mistake as the page's message box (no traceback, nothing logged)."""

    @functools.wraps(function)
    def wrapped(*args):
        try:
            return function(*args)
        except InputError as error:
            raise gr.Error(str(error), print_exception=False) from None

    return wrapped


def figures(result: Result) -> tuple[Figure, Figure]:
    """The explanation figures of ``wca.explain``: each description's local match (WCA) beside
    its whole-image similarity (CLIP-D), and where the top descriptions match."""
    image, prediction, classifier = result.image, result.prediction, result.classifier
    return (
        descriptions_figure(image, prediction, classifier),
        where_figure(image, prediction, classifier),
    )


@dataclass
class Inputs:
    image: gr.Image
    classes: gr.Textbox
    classes_file: gr.File
    descriptions: gr.File
    descriptors: gr.File
    n_crops: gr.Slider
    alpha: gr.Slider
    submit: gr.Button


def _inputs(preloaded: Preloaded) -> Inputs:
    image = gr.Image(type="filepath", label="Image", sources=["upload", "clipboard"], height=260)
    if preloaded.examples:
        gr.Examples([[str(p)] for p in preloaded.examples], [image], label="Examples")
    classes = gr.Textbox(
        "\n".join(preloaded.classnames), label="Class names, one per line", lines=6, max_lines=10
    )
    n_crops = gr.Slider(1, MAX_CROPS, value=60, step=1, label="Crops N")
    alpha = gr.Slider(
        0.1, 0.9, value=0.5, step=0.05, label="alpha: smallest crop side / short side"
    )
    submit = gr.Button("Classify", variant="primary")
    with gr.Accordion("Your own texts: class names, descriptions, CLIP-D descriptors", open=False):
        preloaded_text = (
            "the preloaded descriptions serve; other " if preloaded.descriptions else ""
        )
        gr.Markdown(TEXTS_HELP.format(preloaded=preloaded_text))
        json_file = {"file_types": [".json"], "type": "filepath", "height": 90}
        classes_file = gr.File(
            label="Class names (.txt, one per line, or a JSON list): fills the box above",
            **{**json_file, "file_types": [".txt", ".json"]},
        )
        descriptions = gr.File(label="Descriptions (JSON)", **json_file)
        descriptors = gr.File(label="CLIP-D descriptors (JSON)", **json_file)
    return Inputs(image, classes, classes_file, descriptions, descriptors, n_crops, alpha, submit)


def build_app(service: Service) -> gr.Blocks:
    """The page for ``service``, with its preloaded classes and examples."""
    with gr.Blocks(title="WCA zero-shot classification") as app:
        gr.Markdown(INTRO.format(model=service.name))
        with gr.Row():
            with gr.Column(scale=2):
                given = _inputs(service.preloaded)
            with gr.Column(scale=3):
                notes = gr.Markdown()
                with gr.Row():
                    rankings = [
                        gr.Label(label=title, num_top_classes=TOP_K, elem_id=f"{key}-label")
                        for key, title in (("wca", "WCA"), ("clip", "CLIP"), ("clipd", "CLIP-D"))
                    ]
        # the figures span the page, each under its own heading: no label drawn over them
        explanation = []
        for key, heading in FIGURES:
            gr.Markdown(f"### {heading}", elem_id=f"{key}-heading")
            explanation.append(gr.Plot(show_label=False, elem_id=f"{key}-plot"))
        record = gr.JSON(label="JSON: rankings, settings, notes and WCA's evidence", open=False)

        @messages
        def page(image, classes_text, descriptions, descriptors, n_crops, alpha):
            result = service.classify(
                upload_path(image),
                classes_text,
                upload_path(descriptions),
                upload_path(descriptors),
                n_crops,
                alpha,
            )
            rankings = [result.wca, *result.baselines]
            labels = [gr.Label(r.as_dict(), label=r.title) for r in rankings]
            notes_text = "\n".join(f"- {note}" for note in result.notes)
            return notes_text, *labels, *figures(result), result.record()

        @messages
        def classify(image, classes_text, descriptions, n_crops, alpha):
            """WCA's top classes as ``[{"label": ..., "score": ...}]``."""
            paths = upload_path(image), upload_path(descriptions)
            result = service.classify(paths[0], classes_text, paths[1], None, n_crops, alpha)
            return result.wca.as_pipeline()

        @messages
        def read_classes(upload):
            return classnames_text(upload_path(upload)) if upload else gr.skip()

        # the handlers check every upload themselves; both model events share one queue slot
        unchecked = {"preprocess": False, "concurrency_id": "model"}
        given.submit.click(
            page,
            [given.image, given.classes, given.descriptions, given.descriptors]
            + [given.n_crops, given.alpha],
            [notes, *rankings, *explanation, record],
            api_visibility="private",
            **unchecked,
        )
        given.classes_file.upload(
            read_classes,
            given.classes_file,
            given.classes,
            api_visibility="private",
            preprocess=False,
        )
        # the API endpoint: same inputs but the descriptors, WCA's answer as JSON
        gr.Button(visible=False).click(
            classify,
            [given.image, given.classes, given.descriptions, given.n_crops, given.alpha],
            gr.JSON(visible=False),
            api_name="classify",
            **unchecked,
        )
    app.queue(max_size=QUEUE_SIZE, default_concurrency_limit=1)
    return app


def launch(app: gr.Blocks, host: str, port: int, share: bool = False, **options) -> None:
    """Serve ``app`` (blocking), with uploads capped at 20 MB and local fonts (offline)."""
    theme = gr.themes.Default(
        font=["ui-sans-serif", "system-ui", "sans-serif"],
        font_mono=["ui-monospace", "monospace"],
    )
    app.launch(
        server_name=host,
        server_port=port,
        share=share,
        max_file_size="20mb",
        theme=theme,
        footer_links=["api"],
        **options,
    )
