"""DOTA against a plain loop-per-image float64 transcription of its authors' code:
skylineeeeen/DOTA ``dota.py`` (``DOTA``, ``run_test_dota``, ``main``'s 0.001 means) and
``utils.py`` (``get_clip_logits_aug``), without ``.cuda()``/``.half()``."""

from __future__ import annotations

import pytest
import torch

from online_streams import D, clip_base, hash_encoder, stream_views, streamed, toy_sources, unit
from wca.methods import build_head
from wca.methods.dota import DOTAHead


def softmax_entropy(x):
    return -(x.softmax(1) * x.log_softmax(1)).sum(1)


def get_clip_logits_aug(image_features, clip_weights, scale):
    """``get_clip_logits_aug`` after encoding and normalisation: features ``[V, D]``."""
    clip_logits = scale * image_features @ clip_weights
    if image_features.size(0) > 1:
        batch_entropy = softmax_entropy(clip_logits)
        selected_idx = torch.argsort(batch_entropy, descending=False)[
            : int(batch_entropy.size()[0] * 0.1)
        ]
        output = clip_logits[selected_idx]
        image_features = image_features[selected_idx]
        clip_logits = output.mean(0).unsqueeze(0)
        prob_map = output.softmax(1)
    else:
        prob_map = clip_logits.softmax(1)
    return image_features, clip_logits, prob_map


class DOTA:
    """The authors' ``DOTA`` module (``streaming_update_Sigma=True``)."""

    def __init__(self, cfg, input_shape, num_classes, clip_weights):
        self.input_shape = input_shape
        self.epsilon = cfg["epsilon"]
        self.mu = clip_weights.T
        self.c = torch.ones(num_classes, dtype=torch.float64)
        self.Sigma = cfg["sigma"] * torch.eye(input_shape, dtype=torch.float64).repeat(
            num_classes, 1, 1
        )
        self.overall_Sigma = torch.mean(self.Sigma, dim=0)
        self.Lambda = torch.pinverse(self.overall_Sigma)

    def fit(self, x, y):
        sum_weights = torch.sum(y, dim=0)
        weighted_x = torch.matmul(y.T, x)
        new_mu = (weighted_x + self.c.unsqueeze(1) * self.mu) / (
            sum_weights.unsqueeze(1) + self.c.unsqueeze(1)
        )
        new_c = self.c + sum_weights
        x_minus_mu = x.unsqueeze(1) - self.mu.unsqueeze(0)
        weighted_x_minus_mu = y.unsqueeze(2) * x_minus_mu
        delta = torch.einsum("bji,bjk->jik", weighted_x_minus_mu, x_minus_mu)
        self.Sigma = (self.c[:, None, None] * self.Sigma + delta) / (
            self.c[:, None, None] + sum_weights[:, None, None]
        )
        self.overall_Sigma = torch.mean(self.Sigma, dim=0)
        self.mu = new_mu
        self.c = new_c

    def update(self):
        eye = torch.eye(self.input_shape, dtype=torch.float64)
        self.Lambda = torch.inverse((1 - self.epsilon) * self.overall_Sigma + self.epsilon * eye)

    def predict(self, X):
        M = self.mu.transpose(1, 0)
        W = torch.matmul(self.Lambda, M)
        c = 0.5 * torch.sum(M * W, dim=0)
        return torch.matmul(X, W) - c


def dota_loop(stream, text, cfg, scale):
    """``run_test_dota`` over ``stream`` (a list of ``[V, D]`` views per image)."""
    clip_weights = text.T
    means = torch.full(clip_weights.shape, 0.001, dtype=torch.float64)
    dota_model = DOTA(cfg, clip_weights.shape[0], clip_weights.shape[1], means)
    outputs, zero_shot = [], []
    for images in stream:
        image_features, clip_logits, prob_map = get_clip_logits_aug(images, clip_weights, scale)
        dota_logits = dota_model.predict(image_features.mean(0).unsqueeze(0))
        dota_weights = torch.clamp(
            cfg["rho"] * dota_model.c.mean() / image_features.size(0), max=cfg["eta"]
        )
        outputs.append((clip_logits + dota_weights * dota_logits)[0])
        zero_shot.append(clip_logits[0])
        dota_model.fit(image_features, prob_map)
        dota_model.update()
    return torch.stack(outputs), torch.stack(zero_shot)


CONFIG = {"epsilon": 1e-4, "sigma": 0.002, "eta": 0.4, "rho": 0.05}


@pytest.mark.parametrize("n_views,views", [(1, "full"), (20, "full"), (20, "confident")])
def test_dota_equals_the_authors_loop(n_views, views):
    classes, scale = 5, 20.0
    stream, text = stream_views(40, n_views, classes, seed=21), unit(classes, D, seed=22)
    head = DOTAHead(clip_base(text, scale), views, **CONFIG)
    scores = head.logits(stream[:, 0], stream[:, 1:] if n_views > 1 else None)
    per_image = [v if views == "confident" else v[:1] for v in stream]
    expected, zero_shot = dota_loop(per_image, text, CONFIG, scale)
    torch.testing.assert_close(scores, expected, atol=1e-6, rtol=0)
    assert (scores - zero_shot).abs().amax() > 1.0  # the Gaussians weigh in
    assert (scores.argmax(1) != zero_shot.argmax(1)).any()
    torch.testing.assert_close(streamed(head, stream), expected, atol=1e-6, rtol=0)


def test_dota_weight_grows_to_eta_and_the_same_stream_gives_the_same_outputs():
    classes, scale = 4, 20.0
    stream, text = stream_views(60, 1, classes, seed=23), unit(classes, D, seed=24)
    head = DOTAHead(clip_base(text, scale), rho=0.02, eta=0.1)
    first, again = head.logits(stream[:, 0]), head.logits(stream[:, 0])
    assert torch.equal(first, again)
    run = head.stream(60)
    run.logits(stream[:, 0])
    # n_c = 1 + the soft labels summed over 60 images: mean 1 + 60 / 4 = 16, rho 16 > eta
    assert run.counts.mean().item() == pytest.approx(16.0)


def test_dota_per_dataset_values_and_options():
    sources = toy_sources()
    head = build_head("dota", hash_encoder, sources)
    assert (head.epsilon, head.sigma, head.eta, head.rho, head.views) == (
        1e-4,
        0.002,
        0.2,
        0.005,
        "full",
    )
    sketch = build_head("dota", hash_encoder, sources, dataset="imagenet_sketch", eta=0.5)
    assert (sketch.eta, sketch.rho, sketch.views) == (0.5, 0.03, "confident")
    assert sketch.uses_crops
    food = build_head("dota", hash_encoder, sources, dataset="food101")
    assert (food.epsilon, food.eta, food.rho) == (4e-5, 0.1, 0.01)
    cases = [({"epsilon": 0}, "epsilon"), ({"views": "all"}, "views"), ({"rho": -1}, "rho")]
    for options, message in cases:
        with pytest.raises(ValueError, match=message):
            build_head("dota", hash_encoder, sources, **options)


def test_dota_on_wca_builds_and_scores():
    sources = toy_sources()
    head = build_head("dota+wca", hash_encoder, sources, logit_scale=20.0)
    assert head.online and head.uses_crops and head.n_draws == 1
    views = stream_views(30, 12, 4, seed=25).float()
    whole = head.logits(views[:, 0], views[:, 1:])
    assert whole.shape == (30, 4) and torch.isfinite(whole).all()
    stream = head.stream(30)
    chunks = [stream.logits(views[lo:hi, 0], views[lo:hi, 1:]) for lo, hi in [(0, 9), (9, 30)]]
    torch.testing.assert_close(torch.cat(chunks), whole, atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="no option base"):
        build_head("dota+wca", hash_encoder, sources, base="clip")
