"""ZERO, MTA and AWT heads against plain loop-per-image float64 implementations written from the
authors' code (FarinaMatteo/zero ttas/zero.py + utils/tools.py, MaxZanella/MTA mta.py,
MCG-NJU/AWT AWT_zero_shot/evaluate.py), and WCA's ablation variants."""

from __future__ import annotations

import math

import ot
import pytest
import torch
import torch.nn.functional as F

from wca.methods import TextSources, build_head
from wca.methods.awt import AWTHead, sinkhorn
from wca.methods.mta import MTAHead
from wca.methods.zero import ZeroHead

D = 12


def unit(*shape, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=generator, dtype=torch.float64), dim=-1)


# --------------------------------------------------------------------------- ZERO


def zero_loop(views, text, gamma, scale):
    """One image, as ``Zero.zero``: confidence filter, one-hot votes, greedy tie-break."""
    logits = views @ text.T
    p = (scale * logits).softmax(1)
    entropy = -(p * p.log()).sum(1)
    order = torch.argsort(entropy, stable=True)
    kept = int(len(views) * gamma)
    counts = torch.zeros(text.shape[0], dtype=torch.float64)
    for v in order[:kept]:
        counts[logits[v].argmax()] += 1
    best = counts.max()
    ties = [c for c in range(len(counts)) if counts[c] == best]
    if len(ties) == 1:
        return ties[0]
    rest = logits[order[kept:]]
    for row in rest:  # greedy_break: the first remaining view voting for a tied class
        if int(row.argmax()) in ties:
            return int(row.argmax())
    first = rest[0] if len(rest) else logits[order[-1]]
    return max(ties, key=lambda c: float(first[c]))  # the tied class with the highest logit


@pytest.mark.parametrize("n_views,gamma", [(1, 0.3), (4, 0.3), (17, 0.3), (61, 0.3), (8, 1.0)])
def test_zero_predictions_equal_the_loop(n_views, gamma):
    views, text = unit(40, n_views, D, seed=1), unit(5, D, seed=2)
    head = ZeroHead(text, gamma=gamma, logit_scale=30.0)
    predictions = head.logits(views[:, 0], views[:, 1:]).argmax(1)
    expected = [zero_loop(v, text, gamma, 30.0) for v in views]
    assert predictions.tolist() == expected


def test_zero_constructed_ties():
    """Two kept views disagree: the first remaining view in the tie decides; if no remaining
    view votes for a tied class, the tied class with the highest logit in the first one does."""
    text = torch.eye(4, dtype=torch.float64)

    def view(weights):
        return F.normalize(torch.tensor(weights, dtype=torch.float64), dim=0)

    kept = [view([1, 0.01, 0, 0]), view([0.02, 1, 0, 0])]  # sharpest: vote 0 and 1
    middle = view([0.2, 0.3, 0.9, 0.0])  # votes 2 (not tied)
    decider = view([0.3, 0.5, 0.1, 0.35])  # votes 1 (tied)
    loose = [view([0.5, 0.45, 0.48, 0.47])] * 6  # least confident
    views = torch.stack(kept + [middle, decider] + loose)  # 10 views, gamma 0.2: 2 kept
    head = ZeroHead(text, gamma=0.2, logit_scale=10.0)
    scores = head.logits(views[None, 0], views[None, 1:])[0]
    assert scores.tolist() == [1.0, 2.0, 0.0, 0.0]
    assert zero_loop(views, text, 0.2, 10.0) == 1
    # nobody among the rest votes 0 or 1: the first remaining view's higher logit of 0 and 1
    others = [view([0.3, 0.4, 0.9, 0.1])] * 8
    views = torch.stack(kept + others)
    scores = head.logits(views[None, 0], views[None, 1:])[0]
    assert int(scores.argmax()) == 1 == zero_loop(views, text, 0.2, 10.0)


# --------------------------------------------------------------------------- MTA


def mta_loop(x, text, scale, lambda_y=0.2, lambda_q=4.0):
    """One image, as ``solve_mta`` (k at least 1, bandwidth at least 1e-6)."""
    logits = x @ text.T * scale
    n = len(x)
    if n == 1:
        return x[0] @ text.T * scale
    dist = (x[:, None] - x[None]).norm(dim=-1)
    k = max(int(0.3 * (n - 1)), 1)
    bandwidth = torch.sqrt(0.5 * (torch.sort(dist, dim=1).values[:, 1 : k + 1] ** 2).mean(1))
    bandwidth = bandwidth.clamp_min(1e-6)

    def kernel(mode):
        return torch.exp(-((x - mode).norm(dim=-1) ** 2) / (2 * bandwidth**2))

    affinity = logits.softmax(1) @ logits.softmax(1).T
    y = torch.ones(n, dtype=x.dtype) / n
    mode = x[0]
    for _ in range(5):
        density = kernel(mode)
        for _ in range(5):
            old = y
            y = F.softmax(1 / lambda_y * (density + lambda_q * (affinity * y[None]).sum(1)), -1)
            if torch.norm(old - y) < 1e-6:
                break
        for _ in range(5):
            old = mode
            weighted = kernel(mode) * y
            mode = (weighted[:, None] * x).sum(0) / weighted.sum()
            mode = mode / mode.norm()
            if torch.norm(old - mode) < 1e-6:
                break
    return mode @ text.T * scale


@pytest.mark.parametrize("n_views", [1, 2, 5, 17, 61])
def test_mta_equals_the_loop(n_views):
    views, text = unit(12, n_views, D, seed=3), unit(6, D, seed=4)
    scores = MTAHead(text, logit_scale=50.0).logits(views[:, 0], views[:, 1:])
    expected = torch.stack([mta_loop(v, text, 50.0) for v in views])
    torch.testing.assert_close(scores, expected, atol=1e-6, rtol=0)


def test_mta_identical_views_give_the_view():
    view, text = unit(D, seed=5), unit(3, D, seed=6)
    views = view.expand(2, 9, D)
    scores = MTAHead(text).logits(views[:, 0], views[:, 1:])
    torch.testing.assert_close(scores, (100.0 * view @ text.T).expand(2, 3))


# --------------------------------------------------------------------------- AWT


def awt_loop(views, prompts, scale, eps=0.1):
    """One image, as ``AWT_evaluation``: ``prompts`` a list per class of ``[P_c, D]``."""
    classes = len(prompts)
    out = [scale * views @ p.T for p in prompts]  # per class [V, P_c]
    mean = torch.stack([o.mean(1) for o in out], dim=1)  # [V, C]
    image_entropy = -(mean.softmax(-1) * mean.log_softmax(-1)).sum(-1)
    image_weights = F.softmax(-image_entropy / 0.5, dim=-1)
    text_weights = []
    for c in range(classes):
        anchor = mean[0][None].repeat(len(prompts[c]), 1)  # [P_c, C]
        anchor[:, c] = out[c][0]  # swap in each prompt's logit for class c
        entropy = -(anchor.softmax(-1) * anchor.log_softmax(-1)).sum(-1)
        text_weights.append(F.softmax(-entropy / 0.5, dim=-1))
    kernels = [torch.exp(-(1.0 - o / scale) / eps) for o in out]
    r = [torch.ones(len(views), dtype=views.dtype) for _ in range(classes)]
    col = [torch.ones_like(w) for w in text_weights]
    for _ in range(100):
        old = r
        r = [image_weights / (k @ cc) for k, cc in zip(kernels, col, strict=True)]
        col = [w / (k.T @ rr) for k, w, rr in zip(kernels, text_weights, r, strict=True)]
        err = torch.stack([(a - b).abs() for a, b in zip(r, old, strict=True)]).mean()
        if err.item() < 1e-2:
            break
    plans = [rr[:, None] * cc[None] * k for rr, cc, k in zip(r, col, kernels, strict=True)]
    return torch.stack([(t * o).sum() for t, o in zip(plans, out, strict=True)])


def padded(prompts):
    width = max(len(p) for p in prompts)
    emb = torch.zeros(len(prompts), width, D, dtype=torch.float64)
    mask = torch.zeros(len(prompts), width, dtype=torch.bool)
    for c, p in enumerate(prompts):
        emb[c, : len(p)], mask[c, : len(p)] = p, True
    return emb, mask


@pytest.mark.parametrize(
    "n_views,counts", [(1, [4, 4, 4]), (17, [6, 6, 6, 6]), (9, [1, 5, 3]), (5, [1]), (8, [1, 1])]
)
def test_awt_equals_the_loop(n_views, counts):
    views = unit(7, n_views, D, seed=7)
    prompts = [unit(n, D, seed=10 + c) for c, n in enumerate(counts)]
    emb, mask = padded(prompts)
    emb[~mask] = 5.0  # padding holds garbage: it must not leak
    scores = AWTHead(emb, mask, logit_scale=40.0).logits(views[:, 0], views[:, 1:])
    expected = torch.stack([awt_loop(v, prompts, 40.0) for v in views])
    torch.testing.assert_close(scores, expected, atol=1e-6, rtol=0)


def test_awt_sub_batches_give_the_same_scores(monkeypatch):
    views, (emb, mask) = unit(9, 6, D, seed=8), padded([unit(3, D, seed=9)] * 4)
    head = AWTHead(emb, mask)
    whole = head.logits(views[:, 0], views[:, 1:])
    monkeypatch.setattr("wca.methods.awt.BLOCK", 1)
    torch.testing.assert_close(head.logits(views[:, 0], views[:, 1:]), whole)


def test_awt_identical_views_and_one_class():
    view, (emb, mask) = unit(D, seed=11), padded([unit(4, D, seed=12)])
    views = view.expand(3, 7, D)
    scores = AWTHead(emb, mask).logits(views[:, 0], views[:, 1:])
    assert scores.shape == (3, 1) and torch.isfinite(scores).all()
    torch.testing.assert_close(scores, awt_loop(views[0], [emb[0]], 100.0).expand(3, 1))


def test_sinkhorn_matches_pot():
    """At convergence the authors' loop gives POT's entropic plan for the same cost and
    marginals."""
    cos = torch.einsum("bvd,cpd->bcvp", unit(2, 6, D, seed=13), unit(3, 4, D, seed=14))
    u = torch.softmax(unit(2, 6, seed=15) * 3, dim=-1)
    v = torch.softmax(unit(2, 3, 4, seed=16) * 3, dim=-1)
    plan = sinkhorn(torch.exp(-(1 - cos) / 0.1), u, v, iterations=20000, tolerance=1e-14)
    for b in range(2):
        for c in range(3):
            expected = ot.sinkhorn(
                u[b].numpy(),
                v[b, c].numpy(),
                (1 - cos[b, c]).numpy(),
                0.1,
                numItermax=20000,
                stopThr=1e-14,
            )
            assert abs(plan[b, c].numpy() - expected).max() < 1e-6
            torch.testing.assert_close(plan[b, c].sum(1), u[b])


# --------------------------------------------------------------------------- registry


def encode(texts):
    return torch.stack([unit(D, seed=sum(map(ord, t)) * 31 + len(t)).float() for t in texts])


def sources(counts=(3, 1, 2)):
    names = [f"class {i}" for i in range(len(counts))]
    sentences = {
        n: [f"{n} looks like {j}." for j in range(k)] for n, k in zip(names, counts, strict=True)
    }
    return TextSources(names, sentences=sentences, templates=["a {}.", "the {}."])


@pytest.mark.parametrize("method", ["zero", "mta", "awt"])
@pytest.mark.parametrize("text", [None, "clip-e", "cupl"])
def test_peer_heads_build_and_score(method, text):
    if text and method == "awt":
        pytest.skip("awt reads the sentences")
    options = {"text": text} if text else {}
    head = build_head(method, encode, sources(), logit_scale=50.0, **options)
    assert head.uses_crops
    image, crops = unit(4, D, seed=1).float(), unit(4, 5, D, seed=2).float()
    scores = head.logits(image, crops)
    assert scores.shape == (4, 3) and torch.isfinite(scores).all()


def test_awt_takes_the_first_n_descriptions():
    head = build_head("awt", encode, sources((5, 2)), n_descriptions=3)
    assert head.mask.sum(1).tolist() == [4, 3]  # the label prompt + up to 3 sentences
    label = "a photo of a class 0."
    torch.testing.assert_close(
        head.prompt_emb[0, :2], encode([label, f"{label} class 0 looks like 0."])
    )


def test_bad_peer_options_are_errors():
    with pytest.raises(ValueError, match="gamma"):
        build_head("zero", encode, sources(), gamma=0.0)
    with pytest.raises(ValueError, match="text"):
        build_head("mta", encode, sources(), text="wca")


def test_wca_ablations():
    s = sources((4, 2, 3))
    image, crops = unit(5, D, seed=3).float(), unit(5, 6, D, seed=4).float()
    wca = build_head("wca", encode, s)
    uniform_crops = build_head("wca-uniform-crops", encode, s)
    expected = F.normalize(crops.mean(1), dim=-1) @ wca.text.T
    torch.testing.assert_close(uniform_crops.logits(image, crops), expected)
    uniform_text = build_head("wca-uniform-text", encode, s)
    assert torch.allclose(uniform_text.description_weights()[1, :2], torch.tensor(0.5))
    full_view = build_head("wca-full-view", encode, s)
    assert not full_view.uses_crops
    torch.testing.assert_close(full_view.logits(image), image @ wca.text.T)
    paper = build_head("wca-paper", encode, s)
    assert paper.form == "paper"
    with pytest.raises(ValueError, match="image_scale"):
        build_head("wca-uniform-crops", encode, s, image_scale=1.0)
    assert math.isinf(uniform_crops.image_scale)


# --------------------------------------------------------------------------- hardening round 3

AUTHORS_TEMPLATES = [  # AWT's CUSTOM_TEMPLATES (AWT_zero_shot/data/cls_to_names.py) + "."
    ("imagenet", "a photo of a {}."),
    ("imagenetv2", "a photo of a {}."),
    ("imagenet-sketch", "a sketch photo of a {}."),
    ("imagenet-r", "a rendition photo of a {}."),
    ("imagenet-a", "a photo of a {}."),
    ("cub", "a photo of the {}."),
    ("dtd", "a photo of a {}, which is a type of texture, or a type of pattern."),
    ("food101", "a photo of a {} from Food101."),
    ("oxford_pets", "a photo of a {} from OxfordPets."),
    ("eurosat", "satellite photo of the {}."),
]


class RecordingEncoder:
    """An encoder with its own temperature that records every text it encodes."""

    def __init__(self, logit_scale: float = 25.4):
        self.logit_scale, self.seen = logit_scale, []

    def encode_texts(self, texts):
        self.seen.extend(texts)
        return encode(texts)


@pytest.mark.parametrize("dataset,template", AUTHORS_TEMPLATES)
def test_awt_uses_the_authors_template_of_the_dataset(dataset, template):
    encoder = RecordingEncoder()
    task = sources((2, 1))
    task.dataset = dataset
    build_head("awt", encoder, task)
    label = template.format("class 0")
    described = [f"{label} class 0 looks like {j}." for j in range(2)]
    assert encoder.seen[:3] == [label, *described]


@pytest.mark.parametrize("dataset", ["places365", "imagefolder", None])
def test_awt_elsewhere_uses_the_clip_prompt(dataset):
    encoder = RecordingEncoder()
    task = sources((1,))
    task.dataset = dataset
    build_head("awt", encoder, task)
    assert encoder.seen == ["a photo of a class 0.", "a photo of a class 0. class 0 looks like 0."]


@pytest.mark.parametrize("spelling", ["imagenet_r", "ImageNet-R"])
def test_awt_template_names_match_like_dataset_names(spelling):
    from wca.methods.awt import awt_template

    assert awt_template(spelling) == "a rendition photo of a {}."
    assert awt_template("oxford-pets") == "a photo of a {} from OxfordPets."


@pytest.mark.parametrize("method", ["zero", "mta", "awt"])
def test_peer_heads_take_the_encoders_logit_scale(method):
    encoder = RecordingEncoder(logit_scale=25.4)
    assert build_head(method, encoder, sources()).logit_scale == pytest.approx(25.4)
    # its bound encode_texts carries the same model
    assert build_head(method, encoder.encode_texts, sources()).logit_scale == pytest.approx(25.4)
    # an explicit option still wins; a bare function has no model: CLIP's 100
    assert build_head(method, encoder, sources(), logit_scale=50.0).logit_scale == 50.0
    assert build_head(method, encode, sources()).logit_scale == 100.0


def test_heads_without_a_temperature_take_an_encoder_too():
    encoder = RecordingEncoder()
    head = build_head("wca", encoder, sources())
    assert head.desc_emb.shape[0] == 3 and "a photo of a class 0." in encoder.seen


def test_duplicate_names_error_names_the_setting_not_a_flag():
    from wca.methods.registry import DuplicateClassNames

    task = TextSources(["fox", "fox"], sentences={"fox": ["red."]})
    with pytest.raises(DuplicateClassNames, match="allow_duplicate_classes") as error:
        build_head("awt", RecordingEncoder(), task)
    assert "--" not in str(error.value) and error.value.setting == "allow_duplicate_classes"
