"""`wca demo`: the whole method, offline, on the demo world and the shipped tiny CLIP.

Renders the test set (fixed seed), embeds every image's full view and crop pool with the
shipped model, scores clip, clip-d, cupl-style sentences and wca with the authors' multi-run
protocol, and writes the table, the JSON result and one explanation image to a folder.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

from wca import defaults
from wca.demo.world import (
    DemoTestSet,
    class_descriptors,
    class_sentences,
    demo_classes,
)
from wca.extras import MissingExtra

logger = logging.getLogger("wca")
TEST_SEED = 1234
# The best WCA settings found on a validation set (rendered with another seed than the test
# set; see docs/demo.md), scored as the method "wca-tuned": uniform description weights.
TUNED_WCA: dict[str, float] = {"image_scale": defaults.IMAGE_SCALE, "text_scale": 0.0}


def demo_sources(classnames: list[str]):
    """The text sources of every method: CuPL-style sentences (also WCA's descriptions) and
    CLIP-D descriptors, both written from the classes' part descriptions."""
    from wca.methods import TextSources

    classes = demo_classes()
    return TextSources(
        classnames=classnames,
        sentences=class_sentences(classes),
        descriptors=class_descriptors(classes),
    )


def build_heads(encode_texts, sources, tuned: dict[str, float] | None = None) -> dict[str, Any]:
    """clip, clip-d, cupl, wca (authors' defaults) and, when ``tuned`` is given, wca-tuned."""
    from wca.methods import build_head

    heads = {name: build_head(name, encode_texts, sources) for name in ("clip", "clip-d", "cupl")}
    heads["wca"] = build_head("wca", encode_texts, sources)  # the paper's scales
    if tuned:
        heads["wca-tuned"] = build_head("wca", encode_texts, sources, **tuned)
    return heads


def run_demo(
    out: str | Path,
    *,
    model: str | Path | None = None,
    per_class: int = 20,
    n_crops: int = defaults.N_CROPS,
    n_run: int = 10,
    patch_n: int = defaults.N_CROPS,
    alpha: float = defaults.ALPHA,
    seed: int = 0,
    test_seed: int = TEST_SEED,
    progress: bool = False,
    log=print,
):
    """Run the demo and write ``results.json``, ``results.md`` and ``explanation.png`` to ``out``.

    ``progress``: name each phase (rendering, model, texts, features, scoring, explanation) as
    it starts on the ``wca`` logger and show the long ones' progress bars
    (:func:`wca.progress.progress_bar`); ``log`` prints the table and the closing lines.
    Returns the result (:class:`wca.results.ResultFile`).
    """
    from wca.classifier import WCAClassifier
    from wca.config import MethodConfig
    from wca.crops import CropSpec
    from wca.encoders import load_encoder
    from wca.evaluate import evaluate, result_file
    from wca.features import extract_features
    from wca.inputs import file_sha256, sources_sha256
    from wca.options import RunOptions

    start = time.time()
    phase = logger.info if progress else lambda *_: None
    out = Path(out)
    model = Path(model) if model is not None else defaults.demo_model()
    phase(f"rendering the test set: {per_class} images of each class (seed {test_seed})")
    dataset = DemoTestSet(per_class, test_seed)
    phase(f"loading the model {model}")
    encoder = load_encoder(str(model), device="cpu")  # a file (bare path) or any model spec
    encoder.progress = progress
    sources = demo_sources(dataset.classnames)
    phase(f"encoding the texts of every method for {len(dataset.classnames)} classes")
    heads = build_heads(encoder.encode_texts, sources, TUNED_WCA)
    crops = CropSpec(n_crops=n_crops, alpha=alpha, seed=seed)
    options = RunOptions(cache_dir=None, progress=progress)
    phase(f"features: {len(dataset)} images x {n_crops + 1} views (the full view, the crops)")
    features = extract_features(encoder, dataset, crops, options)
    patch_n = min(patch_n, n_crops)
    phase(f"scoring {', '.join(heads)}: {n_run} runs of {patch_n} crops")
    evaluation = evaluate(
        features,
        heads,
        n_run,
        patch_n,
        seed,
        logit_scale=float(encoder.logit_scale),
        progress=progress,
    )
    options_of = {  # every option, defaults included, as wca eval records them
        name: MethodConfig(name=name).resolved_options() for name in ("clip", "clip-d", "cupl")
    }
    options_of["wca"] = MethodConfig(name="wca").resolved_options()
    options_of["wca-tuned"] = MethodConfig(name="wca", options=TUNED_WCA).resolved_options()
    for name, method in evaluation.methods.items():
        method.options = dict(options_of.get(name, {}))
    settings = {
        "dataset": "wca-demo",
        "split": f"test (seed {test_seed}, {per_class} per class)",
        "model": f"open_clip:{model}",
        "model_file": str(model),
        "model_sha256": file_sha256(str(model)),
        "methods": [
            {name: {"name": name, "enabled": True, **options_of.get(name, {})}} for name in heads
        ],
        "crop_strategy": crops.crop_strategy,
        "n_crops": n_crops,
        "patch_n": patch_n,
        "alpha": alpha,
        "effective_alpha": alpha,
        "beta": crops.beta,
        "protocol": "pool",
        "n_run": n_run,
        "seed": seed,
        "precision": "fp32",
        "fidelity": False,
        "fp16_cache": False,
        "descriptions": "the demo world's class sentences and descriptors",
        "descriptions_sha256": sources_sha256(sources),
        "images_sha256": hashlib.sha256(
            dataset.pixels.numpy().tobytes() + dataset.labels.numpy().tobytes()
        ).hexdigest()[:16],  # rendered, not files: the pixels themselves
        "test_set": {"per_class": per_class, "seed": test_seed, "classes": len(dataset.classnames)},
    }
    result = result_file(
        evaluation, settings, dataset="wca-demo", model="wca-demo-rn", pretrained=str(model)
    )
    out.mkdir(parents=True, exist_ok=True)
    title = f"wca demo: {len(dataset)} images, {len(dataset.classnames)} classes"
    table = result.table(title)
    result.write(out / "results.json")
    (out / "results.md").write_text(table + "\n", encoding="utf-8")
    written = "results.json, results.md"
    try:
        from wca.explain import render_explanation
    except MissingExtra as error:
        logger.warning(f"no explanation.png: {error}")
    else:
        classifier = WCAClassifier(
            encoder, dataset.classnames, sources.sentences, n_crops=patch_n, alpha=alpha, seed=seed
        )  # the explained image's crops: as many as a run scores
        image, label = dataset[0]
        phase(f"explaining one image: {out / 'explanation.png'}")
        prediction = classifier.predict([image], top_k=3)[0]
        render_explanation(
            image, prediction, out / "explanation.png", classifier, dataset.classnames[label]
        )
        written += " and explanation.png"
        log(f"true class of the explained image: {dataset.classnames[label]}")
    log(table)
    log(legend(list(heads)))
    log(f"wrote {out}/{written} in {time.time() - start:.0f}s")
    log(
        f"next: `wca report {out} --baseline clip` (each method's difference to CLIP, with its "
        "interval); `wca demo --export DIR` writes these images, texts and model for `wca "
        "eval`, `wca classify` and other tools (DIR/README.txt has the commands)"
    )
    return result


def legend(methods: list[str]) -> str:
    """What the table's rows and columns are (the methods' summaries of the registry)."""
    from wca.methods.registry import SUMMARIES

    tuned = "WCA with text_scale 0 (uniform description weights), best on a validation set"
    lines = [f"  {name}: {SUMMARIES.get(name, tuned)}" for name in methods]
    lines.append("  ECE: expected calibration error (15 bins, in %; lower is better calibrated);"
                 " tail: the worst 10 % of runs")  # fmt: skip
    return "\n".join(["legend:", *lines])


EXPORT_README = """\
The wca demo's test set, its texts and its model (written by `wca demo --export`).

images/<class>/<n>.png  the test images, one folder per class (an image folder)
classnames.json         the class names, in label order (sorted, as the folders)
cupl.json               CuPL-style sentences per class ("A ... has a ...."): the
                        descriptions of cupl and wca (and awt)
clip-d.json             CLIP-D descriptor phrases per class ("a purple square body"):
                        the descriptors of clip-d and waffle; not sentences, so not
                        for wca
{model:<24}the tiny CLIP (OpenAI-format state dict)
wca-demo-rn.json        its open_clip model config

Every method on this folder, from the folder itself:
  wca eval --dataset imagefolder --data-root . --descriptions . --model {model}
(clip-e and waffle are skipped: the demo has no templates or word list.) The same
command with --methods zero,mta,awt,lazsl,tda,dmn,boostadapter,onzeta,tda+wca adds
WCA's peers and the online methods to the same result file, and
  wca report results --baseline wca
shows each method's difference to WCA with its 95 % interval.
"""


def export(out: str | Path, *, per_class: int = 20, test_seed: int = TEST_SEED, model=None) -> Path:
    """Write the test set as an image folder (``images/<class>/<n>.png``), the class names and
    the texts of each method by role (``classnames.json``, ``cupl.json``, ``clip-d.json``), the
    model file and its open_clip model config, and a ``README.txt`` saying which file serves
    which method, so other tools can run on exactly the same data and model."""
    from wca.demo.train import MODEL_CONFIG

    out = Path(out)
    model = Path(model) if model is not None else defaults.demo_model()
    dataset = DemoTestSet(per_class, test_seed)
    images = out / "images"
    for index in range(len(dataset)):
        image, label = dataset[index]
        folder = images / dataset.classnames[label]
        folder.mkdir(parents=True, exist_ok=True)
        image.save(folder / f"{index:05d}.png")
    classes = demo_classes()

    def dump(name: str, value: Any) -> None:
        (out / name).write_text(json.dumps(value, indent=1) + "\n", encoding="utf-8")

    dump("classnames.json", dataset.classnames)
    dump("cupl.json", class_sentences(classes))
    dump("clip-d.json", class_descriptors(classes))
    (out / "README.txt").write_text(EXPORT_README.format(model=model.name), encoding="utf-8")
    shutil.copyfile(model, out / model.name)
    shutil.copyfile(MODEL_CONFIG, out / MODEL_CONFIG.name)
    return out
