"""The page's model side, free of Gradio: one encoder per process, each request's classifier,
its prediction and the CLIP and CLIP-D rankings of the same image embedding."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image

from wca import defaults
from wca.budget import BudgetSpec
from wca.classifier import Prediction, WCAClassifier
from wca.errors import SettingError
from wca.images import load_image
from wca.methods import TextSources, build_head
from wca.methods.prompts import LABEL_TEMPLATE
from wca.web.inputs import (
    InputError,
    check_image_file,
    class_texts,
    crop_settings,
    parse_classnames,
    with_clip_prompts,
)

TOP_K = 5
TITLES = {"clip": "CLIP", "clip-d": "CLIP-D", "cupl": "CuPL"}  # the methods as the page names them


@dataclass
class Preloaded:
    """What the page starts with: class names, their descriptions and CLIP-D descriptors
    (``{class: [text, ...]}``), and example images."""

    classnames: list[str] = field(default_factory=list)
    descriptions: dict[str, list[str]] = field(default_factory=dict)
    descriptors: dict[str, list[str]] = field(default_factory=dict)
    examples: list[Path] = field(default_factory=list)


@dataclass
class Ranking:
    """One method's top classes: ``title`` names the method as the page shows it."""

    title: str
    labels: list[str]
    scores: list[float]

    def as_dict(self) -> dict[str, float]:
        return dict(zip(self.labels, self.scores, strict=True))

    def as_pipeline(self) -> list[dict[str, float | str]]:
        return [{"label": lab, "score": s} for lab, s in zip(self.labels, self.scores, strict=True)]


@dataclass
class Result:
    """One request's answer: the image as scored, WCA's prediction (with its classifier, for
    the explanation figures), the baselines' rankings, and notes on the texts used."""

    image: Image.Image
    classifier: WCAClassifier
    prediction: Prediction
    wca: Ranking
    baselines: list[Ranking]
    notes: list[str]

    def record(self) -> dict:
        """The answer as JSON: every method's ranking, the settings, the notes and WCA's
        evidence (``wca.explain.explanation_record``)."""
        from wca.explain import explanation_record

        return {
            "methods": {r.title: r.as_pipeline() for r in [self.wca, *self.baselines]},
            "settings": {
                "n_crops": self.classifier.n_crops,
                "alpha": self.classifier.alpha,
                "seed": self.classifier.seed,
            },
            "notes": self.notes,
            "explanation": explanation_record(self.prediction, self.classifier),
        }


class Service:
    """Holds the encoder (loaded once) and answers requests one at a time."""

    def __init__(
        self,
        encoder,
        name: str,
        preloaded: Preloaded | None = None,
        budget: BudgetSpec | None = None,
    ) -> None:
        """``budget``: how many crops an image reads (:class:`wca.budget.BudgetSpec`; None:
        every crop of the slider's N)."""
        self.encoder = encoder
        self.name = name
        self.preloaded = preloaded or Preloaded()
        self.budget = BudgetSpec() if budget is None else budget
        self._lock = threading.Lock()

    def classify(
        self,
        image_path: str | Path | None,
        classes_text: str | None,
        descriptions_path: str | Path | None = None,
        descriptors_path: str | Path | None = None,
        n_crops: float = defaults.N_CROPS,
        alpha: float = defaults.ALPHA,
    ) -> Result:
        """Check the inputs (:class:`InputError` on a mistake), then score WCA, CLIP and CLIP-D.

        Classes without descriptions (no file, and none preloaded) are scored by WCA with the
        plain CLIP prompt. CLIP-D needs descriptor phrases for every class; where some lack
        them, the third ranking is CuPL's (the mean embedding of WCA's descriptions) instead.
        """
        if image_path is None:
            raise InputError("no image: upload one, paste one or pick an example")
        check_image_file(image_path)
        classnames = parse_classnames(classes_text)
        crops = crop_settings(n_crops, alpha)
        try:
            self.budget.stopping(crops.n_crops)  # the budget's own check of its bounds
        except SettingError:
            raise InputError(
                f"crops: at least {self.budget.min_crops} (the adaptive budget's min_crops), "
                f"got {crops.n_crops}"
            ) from None
        found, bare = class_texts(classnames, descriptions_path, self.preloaded.descriptions)
        descriptors, lacking = class_texts(
            classnames, descriptors_path, self.preloaded.descriptors, "CLIP-D descriptors"
        )
        try:
            image = load_image(image_path)
        except ValueError:
            raise InputError(f"{Path(image_path).name}: not a readable image") from None
        descriptions = with_clip_prompts(classnames, found)
        notes = _notes(classnames, descriptions_path, bare, descriptors_path, lacking)
        sources = TextSources(
            classnames,
            sentences=descriptions,
            descriptors=None if lacking else dict(zip(classnames, descriptors, strict=True)),
        )
        baselines = ("clip", "cupl" if lacking else "clip-d")
        with self._lock, torch.inference_mode():
            classifier = WCAClassifier(
                self.encoder, classnames, descriptions, crops=crops, budget=self.budget
            )
            prediction = classifier.predict([image], top_k=TOP_K)[0]
            rankings = [self._rank(method, sources, prediction) for method in baselines]
        wca = Ranking("WCA", prediction.labels, prediction.scores)
        return Result(image, classifier, prediction, wca, rankings, notes)

    def _rank(self, method: str, sources: TextSources, prediction: Prediction) -> Ranking:
        """A baseline's top classes, scored on the full-view embedding WCA already computed."""
        head = build_head(method, self.encoder, sources)
        logits = head.logits(prediction.image_emb.unsqueeze(0))[0]
        probabilities = torch.softmax(self.encoder.logit_scale * logits, dim=-1)
        top = probabilities.topk(min(TOP_K, len(sources.classnames)))
        labels = [sources.classnames[i] for i in top.indices.tolist()]
        return Ranking(TITLES[method], labels, top.values.tolist())


def _notes(
    classnames: list[str],
    descriptions_path: str | Path | None,
    bare: list[str],
    descriptors_path: str | Path | None,
    lacking: list[str],
) -> list[str]:
    """What the page says about the texts used: where they came from, which classes fell back
    to the plain CLIP prompt, and whether the third column is CLIP-D or CuPL."""

    def source(what: str, path: str | Path | None, count: int) -> str:
        origin = f"from {Path(path).name}" if path is not None else "preloaded"
        return f"{what}: {origin}, for {count} classes."

    notes = [source("WCA descriptions", descriptions_path, len(classnames) - len(bare))]
    if bare:
        prompt = LABEL_TEMPLATE.format("{class}")
        notes.append(
            f"{len(bare)} of {len(classnames)} classes have no descriptions: WCA scores them "
            f"with the plain CLIP prompt '{prompt}': " + ", ".join(bare)
        )
    if lacking:
        notes.append(
            "CLIP-D needs descriptor phrases for every class (a clip-d.json); without them "
            "the third column is CuPL: the mean embedding of WCA's descriptions."
        )
    else:
        notes.append(source("CLIP-D descriptors", descriptors_path, len(classnames)))
    return notes


EXAMPLE_INDICES = (0, 7, 13, 20)  # one image each of four demo classes from different families


def demo_service(
    examples_dir: str | Path, device: str = "cpu", budget: BudgetSpec | None = None
) -> Service:
    """The shipped demo model with the demo world's classes, texts and a few test images
    (written to ``examples_dir`` as ``<class>.png``); ``budget`` as :class:`Service`'s."""
    from wca.demo.run import TEST_SEED
    from wca.demo.world import DemoTestSet, class_descriptors, class_sentences
    from wca.encoders import load_encoder

    model = defaults.demo_model()
    encoder = load_encoder(f"open_clip:{model}", device=device)
    images = DemoTestSet(per_class=1, seed=TEST_SEED)
    examples_dir = Path(examples_dir)
    examples_dir.mkdir(parents=True, exist_ok=True)
    examples = []
    for index in EXAMPLE_INDICES:
        image, label = images[index]
        path = examples_dir / f"{images.classnames[label]}.png"
        image.save(path)
        examples.append(path)
    preloaded = Preloaded(images.classnames, class_sentences(), class_descriptors(), examples)
    return Service(encoder, f"the shipped demo model ({model.name})", preloaded, budget)
