"""BCA and OGA against plain loop-per-image float64 transcriptions of their authors' code:
cfuchs2023/OGA ``OGA/OGA_core.py`` (``GaussAdapt``, its default ``RidgeMoorePenrose``) driven
as ``runner.py`` drives it, one image a batch (float64 memory instead of float16); for BCA,
whose authors' repository could not be had, the ``BCA`` class as the public ports of it write
it (``assign_label``, ``update_centers``, ``update_prior``, TPT's ``select_confident_samples``).
"""

from __future__ import annotations

import math

import pytest
import torch

from online_streams import D, clip_base, hash_encoder, stream_views, streamed, toy_sources, unit
from wca.methods import build_head
from wca.methods.bca import BCAHead
from wca.methods.oga import OGAHead

# --------------------------------------------------------------------------- OGA


class GaussAdapt:
    """``GaussAdapt`` with ``sig_type="RidgeMoorePenrose"``, in float64."""

    def __init__(self, clip_prototypes, shot_capacity=8):
        K, d = clip_prototypes.shape
        self.shot_capacity = shot_capacity
        self.K = K
        self.mus = clip_prototypes.clone()
        self.inv_Sig = d * torch.eye(d, dtype=torch.float64)
        self.memory_state = torch.zeros((K, shot_capacity), dtype=torch.bool)
        self.memory = torch.zeros((K, shot_capacity, d), dtype=torch.float64)
        max_entropy = -torch.log(torch.tensor(1 / self.K, dtype=torch.float64))
        self.memory_entropy = max_entropy * torch.ones((K, shot_capacity), dtype=torch.float64)
        self.replaced = 0  # our count of stored images pushed out
        self.ridge = self.pinv = 0  # our counts of the two estimators used

    def update_memory_entropy(self, x, entropy, pseudo_label):
        if torch.any(entropy < self.memory_entropy[pseudo_label, :]):
            idx_max = torch.argmax(self.memory_entropy[pseudo_label, :])
            self.replaced += bool(self.memory_state[pseudo_label, idx_max])
            self.memory[pseudo_label, idx_max] = x[...]
            self.memory_entropy[pseudo_label, idx_max] = entropy
            self.memory_state[pseudo_label, idx_max] = True
            return True
        return False

    def update_memory(self, features, zs_entropy, zs_labels):
        updated = False
        for ji in range(zs_labels.shape[0]):
            if self.update_memory_entropy(features[ji, :], zs_entropy[ji], zs_labels[ji]):
                updated = True
        if updated:
            self.update_mu()
            self.update_sigma()

    def update_mu(self):
        means = torch.mean(self.memory_state[..., None] * self.memory, dim=1)
        mask = torch.sum(self.memory_state, dim=1) >= 2
        self.mus[mask, :] = means[mask, :]

    def update_sigma(self):
        d = self.mus.shape[-1]
        n = torch.sum(self.memory_state)
        if torch.any(torch.sum(self.memory_state, dim=-1) > 2):
            x = self.memory.view((self.K * self.shot_capacity, d))
            x_labels = torch.tensor([k for k in range(self.K) for _ in range(self.shot_capacity)])
            x_mem_state = self.memory_state.view(self.K * self.shot_capacity)
            center_vecs = torch.cat(
                [
                    x[torch.logical_and(x_mem_state, x_labels == k)] - self.mus[k : k + 1, :]
                    for k in range(self.K)
                ]
            )
            center_vec_mean = center_vecs.mean(dim=0)
            c_center_vecs = center_vecs - center_vec_mean[None, :]
            M = c_center_vecs.T @ c_center_vecs / (n - 1)
            if n <= 4 * d:
                trace = torch.sum(M[range(d), range(d)])
                eye = torch.eye(d, dtype=torch.float64)
                self.inv_Sig = d * torch.linalg.pinv((n - 1) * M + trace * eye)
                self.ridge += 1
            else:
                self.inv_Sig = torch.linalg.pinv(M)
                self.pinv += 1

    def get_log_probs(self, x):
        W = torch.einsum("nd, dc -> cn", self.mus, self.inv_Sig)
        b = -torch.einsum("nd, dc, nc -> n", self.mus, self.inv_Sig, self.mus) / 2
        Q = -torch.einsum("nd, dc, nc -> n", x, self.inv_Sig, x) / 2
        return x @ W + b + Q[:, None]

    def get_MAP(self, y_hat, memory_logits, tau):
        p_ = (tau * memory_logits).softmax(-1)
        z = y_hat * p_
        return z / torch.sum(z, dim=1, keepdims=True)


def oga_loop(features, prototypes, temp, shot_capacity, tau):
    """``runner.py`` with ``batch_size=1``: ``log z`` per image."""
    zs_logits = temp * features @ prototypes.T
    zs_probs = zs_logits.softmax(-1)
    zs_entropy = -torch.sum(torch.log(zs_probs + 1e-9) * zs_probs, dim=-1)
    zs_pred = torch.argmax(zs_logits, dim=-1)
    model, outputs = GaussAdapt(prototypes, shot_capacity), []
    for i in range(len(features)):
        batch = slice(i, i + 1)
        model.update_memory(features[batch], zs_entropy[batch], zs_pred[batch])
        log_probs = model.get_log_probs(features[batch])
        outputs.append(model.get_MAP(zs_probs[batch], log_probs, tau).log()[0])
    return torch.stack(outputs), model


@pytest.mark.parametrize("n_images,shot_capacity,tau", [(45, 3, 0.05), (130, 12, 0.3)])
def test_oga_equals_the_authors_loop(n_images, shot_capacity, tau):
    classes, scale = 5, 20.0
    images = stream_views(n_images, 1, classes, seed=41)[:, 0]
    text = unit(classes, D, seed=42)
    head = OGAHead(clip_base(text, scale), shot_capacity, tau)
    expected, model = oga_loop(images, text, scale, shot_capacity, tau)
    assert model.memory_state.all() and model.replaced > 5 and model.ridge > 5
    assert model.pinv > 5 or shot_capacity * classes <= 4 * D  # both estimators, when they can
    torch.testing.assert_close(head.logits(images), expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(streamed(head, images[:, None]), expected, atol=1e-6, rtol=0)
    zero_shot = (scale * images @ text.T).log_softmax(-1)
    assert (expected - zero_shot).abs().amax() > 0.1  # the Gaussians weigh in


# --------------------------------------------------------------------------- BCA


def select_confident_samples(logits, top):
    batch_entropy = -(logits.softmax(1) * logits.log_softmax(1)).sum(1)
    idx = torch.argsort(batch_entropy, descending=False)[: int(batch_entropy.size()[0] * top)]
    return logits[idx], idx


class BCA:
    """The authors' ``BCA`` class as its ports write it."""

    def __init__(self, init_centers, threshold1, init_count1, threshold2, init_count2, tem):
        self.mu = init_centers.clone()
        self.M = self.mu.size(0)
        self.cluster_to_class_prob = torch.eye(self.M, dtype=torch.float64)
        self.threshold1 = threshold1
        self.c1 = [init_count1] * self.M
        self.threshold2 = threshold2
        self.c2 = [init_count2] * self.M
        self.tem = tem
        self.selection_p = 0.1

    def bca_step(self, image_features):
        output, image_features = self.assign_label(image_features)
        prob_max, pred = torch.max(output, dim=1)
        if prob_max > self.threshold1:
            self.update_centers(image_features, pred)
        if prob_max > self.threshold2:
            self.update_prior(output, pred)
        return output

    def assign_label(self, image_features):
        P_x_um = self.tem * image_features @ self.mu.t()
        if image_features.size(0) > 1:
            output, selected_idx = select_confident_samples(P_x_um, self.selection_p)
            image_features = image_features[selected_idx].mean(0).unsqueeze(0)
            P_x_um = output.mean(0).unsqueeze(0)
        s1 = P_x_um.softmax(dim=1)
        return s1 @ self.cluster_to_class_prob, image_features

    def update_prior(self, soft_prob, pred):
        pred = int(pred)
        self.cluster_to_class_prob[pred] = (
            self.c2[pred] * self.cluster_to_class_prob[pred] + soft_prob
        ) / (self.c2[pred] + 1)
        self.c2[pred] = self.c2[pred] + 1

    def update_centers(self, image_feature, pred):
        pred = int(pred)
        self.mu[pred] = self.c1[pred] * self.mu[pred] + image_feature
        self.c1[pred] = self.c1[pred] + 1
        self.mu[pred] = self.mu[pred] / self.c1[pred]
        self.mu[pred] = self.mu[pred] / torch.norm(self.mu[pred])


@pytest.mark.parametrize("n_views,views", [(1, "full"), (20, "full"), (20, "confident")])
def test_bca_equals_the_authors_loop(n_views, views):
    classes, scale = 5, 20.0
    stream, text = stream_views(40, n_views, classes, seed=43), unit(classes, D, seed=44)
    options = {"threshold1": 0.3, "init_count1": 2.0, "threshold2": 0.5, "init_count2": 1.0}
    head = BCAHead(clip_base(text, scale), views, **options, logit_scale=scale)
    scores = head.logits(stream[:, 0], stream[:, 1:] if n_views > 1 else None)
    model = BCA(text, 0.3, 2.0, 0.5, 1.0, scale)
    expected = torch.stack(
        [model.bca_step(v if views == "confident" else v[:1])[0] for v in stream]
    )
    assert min(model.c1) > 2 and sum(model.c2) > classes + 10  # both updates ran, often
    torch.testing.assert_close(scores, expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(streamed(head, stream), expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(head.probabilities(scores, 100.0), expected, atol=1e-12, rtol=0)
    assert (scores.argmax(1) != (scale * stream[:, 0] @ text.T).argmax(1)).any()


# --------------------------------------------------------------------------- the registry


@pytest.mark.parametrize("method", ["bca", "oga"])
def test_bca_and_oga_follow_the_stream_contract(method):
    sources = toy_sources()
    head = build_head(method, hash_encoder, sources, logit_scale=20.0)
    assert head.online and head.n_draws == 1 and not head.uses_crops
    images = stream_views(40, 1, 4, seed=45)[:, 0].float()
    whole = head.logits(images)
    assert torch.equal(whole, head.logits(images))  # the same stream, the same outputs
    fresh = head.stream(30).logits(images[10:])
    assert not torch.allclose(fresh, whole[10:])  # a fresh stream has an empty memory
    ours = build_head(f"{method}+wca", hash_encoder, sources, logit_scale=20.0)
    views = stream_views(30, 12, 4, seed=46).float()
    scores = ours.logits(views[:, 0], views[:, 1:])
    assert ours.uses_crops and scores.shape == (30, 4) and torch.isfinite(scores).all()
    stream = ours.stream(30)
    chunks = [stream.logits(views[lo:hi, 0], views[lo:hi, 1:]) for lo, hi in [(0, 13), (13, 30)]]
    torch.testing.assert_close(torch.cat(chunks), scores, atol=1e-4, rtol=0)


def test_bca_and_oga_defaults_and_bad_options():
    sources = toy_sources()
    bca = build_head("bca", hash_encoder, sources)
    assert (bca.threshold1, bca.init_count1, bca.threshold2, bca.init_count2, bca.views) == (
        0.3,
        30000.0,
        0.3,
        10.0,
        "full",
    )
    assert build_head("bca", hash_encoder, sources, dataset="imagenet-r").views == "confident"
    oga = build_head("oga", hash_encoder, sources)
    assert (oga.shot_capacity, oga.tau) == (8, 0.05)
    assert math.isclose(oga.base.scale, 100.0)
    cases = [
        ("bca", {"threshold1": 1.5}, "threshold1"),
        ("bca", {"init_count2": 0}, "init_count2"),
        ("oga", {"shot_capacity": 0}, "shot_capacity"),
        ("oga", {"dataset": "dtd"}, "no option dataset"),
        ("oga+wca", {"base": "clip"}, "no option base"),
    ]
    for method, options, message in cases:
        with pytest.raises(ValueError, match=message):
            build_head(method, hash_encoder, sources, **options)
