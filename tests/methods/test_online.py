"""The online heads (TDA, DMN-ZS, BoostAdapter, OnZeta) and LaZSL against plain loop-per-image
float64 transcriptions of their authors' code: kdiAAA/TDA ``tda_runner.py`` + ``utils.py``,
YBZh/DMN ``dmn_main.py`` (``DualMem``, ``select_confident_samples``, the zero-shot combination
of ``direct_inference``), taolinzhang/BoostAdapter ``runner.py`` + ``utils.py``, idstcv/OnZeta
``main_online.py`` and shiming-chen/LaZSL ``OP.py`` + ``main_OP.py``; dict caches and loops as
they write them (no ``.cuda()``/``.half()``)."""

from __future__ import annotations

import copy
import hashlib
import math
import operator

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from wca.methods import TextSources, build_head
from wca.methods.boostadapter import BoostAdapterHead
from wca.methods.dmn import DMNHead
from wca.methods.lazsl import LaZSLHead
from wca.methods.online import Base
from wca.methods.onzeta import OnZetaHead
from wca.methods.prompts import PromptHead
from wca.methods.tda import TDAHead

D = 12


def unit(*shape, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=generator, dtype=torch.float64), dim=-1)


def stream_views(n_images, n_views, classes, seed=0, spread=0.6):
    """Views of ``n_images`` images ``[B, V, D]``: noisy copies of a class prototype, so the
    pseudo-labels vary and the caches fill."""
    generator = torch.Generator().manual_seed(seed)
    prototypes = unit(classes, D, seed=seed + 100)
    labels = torch.randint(classes, (n_images,), generator=generator)
    noise = torch.randn(n_images, n_views, D, generator=generator, dtype=torch.float64)
    return F.normalize(prototypes[labels][:, None] + spread * noise, dim=-1)


def clip_base(text, scale):
    return Base(PromptHead(text[None]), scale, text)


def streamed(head, views, cuts=(0, 7, 8, 30)):
    """The head's outputs over ``views [B, V, D]`` fed to one stream in uneven chunks."""
    stream, bounds = head.stream(len(views)), [*cuts, len(views)]
    crops = views[:, 1:] if views.shape[1] > 1 else None
    return torch.cat(
        [
            stream.logits(views[lo:hi, 0], None if crops is None else crops[lo:hi])
            for lo, hi in zip(bounds, bounds[1:], strict=False)
        ]
    )


# --------------------------------------------------------------------------- TDA (utils.py)


def softmax_entropy(x):
    return -(x.softmax(1) * x.log_softmax(1)).sum(1)


def avg_entropy(outputs):
    logits = outputs - outputs.logsumexp(dim=-1, keepdim=True)
    avg_logits = logits.logsumexp(dim=0) - np.log(logits.shape[0])
    min_real = torch.finfo(avg_logits.dtype).min
    avg_logits = torch.clamp(avg_logits, min=min_real)
    return -(avg_logits * torch.exp(avg_logits)).sum(dim=-1)


def get_entropy(loss, clip_weights):
    max_entropy = math.log2(clip_weights.size(1))
    return float(loss / max_entropy)


def get_clip_logits(image_features, clip_weights, scale):
    """``get_clip_logits`` after ``encode_image`` and normalisation: features ``[V, D]``."""
    clip_logits = scale * image_features @ clip_weights
    if image_features.size(0) > 1:
        batch_entropy = softmax_entropy(clip_logits)
        selected_idx = torch.argsort(batch_entropy, descending=False)[
            : int(batch_entropy.size()[0] * 0.1)
        ]
        output = clip_logits[selected_idx]
        image_features = image_features[selected_idx].mean(0).unsqueeze(0)
        clip_logits = output.mean(0).unsqueeze(0)
        loss = avg_entropy(output)
        prob_map = output.softmax(1).mean(0).unsqueeze(0)
        pred = int(output.mean(0).unsqueeze(0).topk(1, 1, True, True)[1].t())
    else:
        loss = softmax_entropy(clip_logits)
        prob_map = clip_logits.softmax(1)
        pred = int(clip_logits.topk(1, 1, True, True)[1].t()[0])
    return image_features, clip_logits, loss, prob_map, pred


class Counted(dict):
    """A cache dict that counts the entries replaced (to check the stream exercised them)."""

    replaced = 0


def update_cache(cache, pred, features_loss, shot_capacity, include_prob_map=False):
    item = features_loss if not include_prob_map else features_loss[:2] + [features_loss[2]]
    if pred in cache:
        if len(cache[pred]) < shot_capacity:
            cache[pred].append(item)
        elif features_loss[1] < cache[pred][-1][1]:
            cache[pred][-1] = item
            cache.replaced += 1
        cache[pred] = sorted(cache[pred], key=operator.itemgetter(1))
    else:
        cache[pred] = [item]


def compute_cache_logits(
    image_features, cache, alpha, beta, clip_weights, neg_mask_thresholds=None
):
    cache_keys = []
    cache_values = []
    for class_index in sorted(cache.keys()):
        for item in cache[class_index]:
            cache_keys.append(item[0])
            if neg_mask_thresholds:
                cache_values.append(item[2])
            else:
                cache_values.append(class_index)
    cache_keys = torch.cat(cache_keys, dim=0).permute(1, 0)
    if neg_mask_thresholds:
        cache_values = torch.cat(cache_values, dim=0)
        cache_values = (
            ((cache_values > neg_mask_thresholds[0]) & (cache_values < neg_mask_thresholds[1]))
            .type(torch.int8)
            .double()
        )
    else:
        cache_values = F.one_hot(
            torch.Tensor(cache_values).to(torch.int64), num_classes=clip_weights.size(1)
        ).double()
    affinity = image_features @ cache_keys
    cache_logits = ((-1) * (beta - beta * affinity)).exp() @ cache_values
    return alpha * cache_logits


def tda_loop(stream, text, pos_params, neg_params, scale):
    """``run_test_tda`` over ``stream`` (a list of ``[V, D]`` views per image)."""
    clip_weights = text.T
    pos_cache, neg_cache, outputs = Counted(), Counted(), []
    for images in stream:
        image_features, clip_logits, loss, prob_map, pred = get_clip_logits(
            images, clip_weights, scale
        )
        prop_entropy = get_entropy(loss, clip_weights)
        update_cache(pos_cache, pred, [image_features, loss], pos_params["shot_capacity"])
        if (
            neg_params["entropy_threshold"]["lower"]
            < prop_entropy
            < neg_params["entropy_threshold"]["upper"]
        ):
            update_cache(
                neg_cache,
                pred,
                [image_features, loss, prob_map],
                neg_params["shot_capacity"],
                True,
            )
        final_logits = clip_logits.clone()
        if pos_cache:
            final_logits += compute_cache_logits(
                image_features, pos_cache, pos_params["alpha"], pos_params["beta"], clip_weights
            )
        if neg_cache:
            thresholds = (
                neg_params["mask_threshold"]["lower"],
                neg_params["mask_threshold"]["upper"],
            )
            final_logits -= compute_cache_logits(
                image_features,
                neg_cache,
                neg_params["alpha"],
                neg_params["beta"],
                clip_weights,
                thresholds,
            )
        outputs.append(final_logits[0])
    return torch.stack(outputs), pos_cache, neg_cache


POS = {"shot_capacity": 3, "alpha": 2.0, "beta": 5.0}
NEG = {
    "shot_capacity": 2,
    "alpha": 0.117,
    "beta": 1.0,
    "entropy_threshold": {"lower": 0.2, "upper": 0.5},
    "mask_threshold": {"lower": 0.03, "upper": 1.0},
}


@pytest.mark.slow
@pytest.mark.parametrize("n_views,views", [(1, "full"), (20, "full"), (20, "confident")])
def test_tda_equals_the_authors_loop(n_views, views):
    classes, scale = 5, 20.0
    stream, text = stream_views(45, n_views, classes, seed=1), unit(classes, D, seed=2)
    head = TDAHead(clip_base(text, scale), views)
    scores = head.logits(stream[:, 0], stream[:, 1:] if n_views > 1 else None)
    per_image = [v if views == "confident" else v[:1] for v in stream]
    expected, pos, neg = tda_loop(per_image, text, POS, NEG, scale)
    assert pos.replaced > 3 and neg.replaced > 1 and sum(map(len, neg.values())) > 4
    torch.testing.assert_close(scores, expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(streamed(head, stream), expected, atol=1e-6, rtol=0)


# --------------------------------------------------------------------------- BoostAdapter


def boost_update_cache(
    cache, pred, features_loss, shot_capacity, include_prob_map=False, fifo=True
):
    """BoostAdapter's ``update_cache``."""
    item = features_loss if not include_prob_map else features_loss[:2] + [features_loss[2]]
    if pred in cache:
        cache[pred].append(item)
        if fifo:
            if len(cache[pred]) > shot_capacity:
                cache[pred] = cache[pred][1:]
                cache.replaced += 1
        else:
            cache[pred] = sorted(cache[pred], key=operator.itemgetter(1))
            cache.replaced += len(cache[pred]) > shot_capacity
            cache[pred] = cache[pred][:shot_capacity]
    else:
        cache[pred] = [item]


def boost_get_clip_logits(image_features, clip_weights, scale, infer_ori_image):
    """BoostAdapter's ``get_clip_logits`` after encoding: features ``[V, D]``."""
    clip_logits = scale * image_features @ clip_weights
    ori_feat = image_features.clone()
    ori_output = clip_logits.clone()
    if image_features.size(0) > 1:
        if infer_ori_image:
            loss = softmax_entropy(clip_logits[:1])
            prob_map = clip_logits[:1].softmax(1)
            pred = int(clip_logits[:1].topk(1, 1, True, True)[1].t()[0])
            return image_features[:1], clip_logits[:1], loss, prob_map, pred, ori_feat, ori_output
        image_features, clip_logits, loss, prob_map, pred = get_clip_logits(
            image_features, clip_weights, scale
        )
        return image_features, clip_logits, loss, prob_map, pred, ori_feat, ori_output
    loss = softmax_entropy(clip_logits)
    prob_map = clip_logits.softmax(1)
    pred = int(clip_logits.topk(1, 1, True, True)[1].t()[0])
    return image_features, clip_logits, loss, prob_map, pred, ori_feat, ori_output


def select_confident_samples(feat, logits, topTPT):
    batch_entropy = -(logits.softmax(1) * logits.log_softmax(1)).sum(1)
    idxTPT = torch.argsort(batch_entropy, descending=False)[: int(batch_entropy.size()[0] * topTPT)]
    return feat[idxTPT], logits[idxTPT], idxTPT


def get_output_entropy(outputs):
    logits = outputs - outputs.logsumexp(dim=-1, keepdim=True)
    return -(logits * torch.exp(logits)).sum(dim=-1)


def boost_cache_logits(image_features, cache, alpha, beta, clip_weights, neg_mask_thresholds=None):
    if sum(len(items) for items in cache.values()) == 0:
        return torch.zeros(1)[0]
    return compute_cache_logits(
        image_features, cache, alpha, beta, clip_weights, neg_mask_thresholds
    )


def boostadapter_loop(stream, text, pos_params, neg_params, delta, scale, infer_ori_image):
    """``run_test_tda`` with ``args.mode == "boostadapter"``."""
    clip_weights = text.T
    pos_cache, neg_cache, outputs, boosted = Counted(), Counted(), [], Counted()
    for images in stream:
        image_features, clip_logits, loss, prob_map, pred, ori_feat, ori_output = (
            boost_get_clip_logits(images, clip_weights, scale, infer_ori_image)
        )
        prop_entropy = get_entropy(loss, clip_weights)
        boost_update_cache(
            pos_cache, pred, [image_features, loss], pos_params["shot_capacity"], fifo=False
        )
        select_feat, select_output, select_idx = select_confident_samples(ori_feat, ori_output, 0.1)
        select_entropy = get_output_entropy(select_output)
        cur_pos_cache = copy.deepcopy(pos_cache)
        cur_pos_cache.replaced = 0
        for i in range(select_entropy.shape[0]):
            cur_pred = int(select_output[i].argmax(dim=-1).item())
            cur_feat = select_feat[i]
            boost_update_cache(
                cur_pos_cache,
                cur_pred,
                [cur_feat.unsqueeze(0), select_entropy[i].item()],
                pos_params["shot_capacity"] + delta,
                fifo=False,
            )
        boosted.replaced += cur_pos_cache.replaced
        if (
            neg_params["entropy_threshold"]["lower"]
            < prop_entropy
            < neg_params["entropy_threshold"]["upper"]
        ):
            boost_update_cache(
                neg_cache, pred, [image_features, loss, prob_map], neg_params["shot_capacity"], True
            )
        final_logits = clip_logits.clone()
        if pos_cache:
            final_logits += boost_cache_logits(
                image_features, cur_pos_cache, pos_params["alpha"], pos_params["beta"], clip_weights
            )
        if neg_cache:
            thresholds = (
                neg_params["mask_threshold"]["lower"],
                neg_params["mask_threshold"]["upper"],
            )
            final_logits -= boost_cache_logits(
                image_features,
                neg_cache,
                neg_params["alpha"],
                neg_params["beta"],
                clip_weights,
                thresholds,
            )
        outputs.append(final_logits[0])
    return torch.stack(outputs), pos_cache, neg_cache, boosted


@pytest.mark.parametrize(
    "n_views,views,delta", [(1, "full", 0), (20, "full", 0), (31, "full", 2), (20, "confident", 1)]
)
def test_boostadapter_equals_the_authors_loop(n_views, views, delta):
    classes, scale = 5, 20.0
    stream, text = stream_views(45, n_views, classes, seed=3), unit(classes, D, seed=4)
    head = BoostAdapterHead(clip_base(text, scale), views, delta=delta)
    scores = head.logits(stream[:, 0], stream[:, 1:] if n_views > 1 else None)
    expected, pos, neg, boosted = boostadapter_loop(
        list(stream), text, POS, NEG, delta, scale, views == "full"
    )
    assert pos.replaced > 3 and neg.replaced > 1
    assert boosted.replaced > 2 or n_views == 1  # boosting samples pushed cache entries out
    torch.testing.assert_close(scores, expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(streamed(head, stream), expected, atol=1e-6, rtol=0)


def test_boosting_samples_carry_the_authors_logsumexp_entropy():
    """In float32 (a real run's precision), near-certain views' entropies differ in their last
    bits between softmax x log-softmax and the authors' ``get_output_entropy``; which boosting
    sample a full class keeps depends on them, so the samples carry the authors' form."""
    classes, scale = 5, 100.0
    views, text = stream_views(40, 30, classes, seed=3, spread=0.2).float(), unit(classes, D)
    logits = torch.stack([scale * image @ text.float().T for image in views])
    stream = BoostAdapterHead(clip_base(text.float(), scale), "full").stream(len(views))
    stream.start(classes)
    stream.prepare(views, logits, views[:, 0], None)
    theirs, softmax_form = [], []
    for image, output in zip(views, logits, strict=True):
        _, select_output, _ = select_confident_samples(image, output, 0.1)
        theirs.append(get_output_entropy(select_output).tolist())
        softmax_form.append(softmax_entropy(select_output).tolist())
    assert softmax_form != theirs  # the two forms disagree on these views
    assert stream.boost_losses == theirs


# --------------------------------------------------------------------------- DMN-ZS


class Model:
    """The attributes of YBZh/DMN's ``ClipFixed`` that ``DualMem`` reads, for zero shots."""

    def __init__(self, text_feat, memory_size, scale):
        n_cls, dim = text_feat.shape
        self.text_feat = text_feat
        self.fixed_global_feat_vanilla = text_feat.clone().unsqueeze(1)
        self.image_feature_memory = torch.zeros(n_cls, memory_size, dim, dtype=text_feat.dtype)
        self.image_prediction_mem = torch.zeros(n_cls, memory_size, n_cls, dtype=text_feat.dtype)
        self.image_entropy_mem = torch.zeros(n_cls, memory_size, dtype=text_feat.dtype)
        self.image_feature_count = torch.zeros(n_cls, 1).long()
        self.memory_size = memory_size
        self.logit_scale = torch.tensor(math.log(scale), dtype=text_feat.dtype)
        self.replaced = 0


class DualMem:
    """``DualMem`` without training: its parameters are zeros, ``position="all"``."""

    def __init__(self, beta, feat_dim, class_num):
        self.beta = beta
        zeros = torch.zeros((class_num, feat_dim), dtype=torch.float64)
        self.global_bias = self.global_bias_key = self.global_bias_value = zeros
        self.global_ffn_bias = self.text_bias = zeros
        self.init_pred = 0

    def update_memory_bank(self, model):
        mean_prob = self.init_pred[0]
        value, indice = mean_prob.max(0)
        pseudo_label = indice.item()
        selected_image_features_global = model.image_features_global[:1]
        current_instance_entropy = -(mean_prob * (torch.log(mean_prob + 1e-8))).sum()
        if model.image_feature_count[pseudo_label] == model.memory_size:
            if (current_instance_entropy < model.image_entropy_mem[pseudo_label]).sum() == 0:
                pass
            else:
                _, indice = torch.sort(model.image_entropy_mem[pseudo_label])
                to_replace_indice = indice[-1]
                model.image_feature_memory[pseudo_label][to_replace_indice] = (
                    selected_image_features_global
                )
                model.image_prediction_mem[pseudo_label][to_replace_indice] = mean_prob[0]
                model.image_entropy_mem[pseudo_label][to_replace_indice] = current_instance_entropy
                model.replaced += 1
        else:
            count = model.image_feature_count[pseudo_label, 0].item()
            model.image_feature_memory[pseudo_label][count] = selected_image_features_global
            model.image_prediction_mem[pseudo_label][count] = mean_prob[0]
            model.image_entropy_mem[pseudo_label][count] = current_instance_entropy
            model.image_feature_count[pseudo_label] += 1

    def get_image_pred(self, model):
        img_feat = model.image_features_global[:1]
        memorized_image_feat = torch.cat(
            (model.image_feature_memory, model.fixed_global_feat_vanilla), dim=1
        )
        img_feat_mappling = img_feat + self.global_bias.mean(0, keepdim=True)
        memorized_image_feat_K = memorized_image_feat + self.global_bias_key.unsqueeze(1)
        memorized_image_feat_V = memorized_image_feat + self.global_bias_value.unsqueeze(1)
        memorized_image_feat_K = memorized_image_feat_K / memorized_image_feat_K.norm(
            dim=-1, keepdim=True
        )
        memorized_image_feat_K[memorized_image_feat.sum(-1) == 0] = 0
        memorized_image_feat_V = memorized_image_feat_V / memorized_image_feat_V.norm(
            dim=-1, keepdim=True
        )
        memorized_image_feat_V[memorized_image_feat.sum(-1) == 0] = 0
        img_feat_mappling = img_feat_mappling / img_feat_mappling.norm(dim=-1, keepdim=True)
        similarity_matrix = (img_feat_mappling * memorized_image_feat_K).sum(-1)
        similarity_matrix = torch.exp(-self.beta * (-similarity_matrix + 1))
        adaptive_image_feat = (memorized_image_feat_V * similarity_matrix.unsqueeze(-1)).sum(1)
        adaptive_image_feat = adaptive_image_feat / adaptive_image_feat.norm(dim=-1, keepdim=True)
        adaptive_image_feat = adaptive_image_feat + self.global_ffn_bias.unsqueeze(0)
        adaptive_image_feat = adaptive_image_feat / adaptive_image_feat.norm(dim=-1, keepdim=True)
        logit_scale = model.logit_scale.exp()
        logits = logit_scale * adaptive_image_feat @ img_feat.unsqueeze(-1)
        logits = logits[:, :, 0]
        return logits.softmax(dim=1)

    def get_text_prediction(self, model):
        logit_scale = model.logit_scale.exp()
        text_feat = model.text_feat + self.text_bias
        text_feat = text_feat / text_feat.norm(dim=1, keepdim=True)
        img_text_logit = logit_scale * model.image_features_global @ text_feat.t()
        return img_text_logit.softmax(-1)


def dmn_select_confident_samples(prob, top, at_least=0):
    """``select_confident_samples``; ``at_least`` 1 is our extension to one view (theirs has
    32 and would average no views)."""
    batch_entropy = -(prob * torch.log(prob + 1e-6)).sum(1)
    count = max(int(batch_entropy.size()[0] * top), at_least)
    idx = torch.argsort(batch_entropy, descending=False)[:count]
    return prob[idx], idx


def dmn_loop(stream, text, memory_size, beta, weight, scale, at_least=0):
    """``direct_inference`` with ``n_shot=0``, scored as ``pred_vanilla + beta2 pred_global``."""
    model = Model(text, memory_size, scale)
    dmnet = DualMem(beta, text.shape[1], text.shape[0])
    outputs = []
    for images in stream:
        model.image_features_global = images
        img_text = dmnet.get_text_prediction(model)
        img_text_pred = img_text[:1]
        confidence_prediction, _ = dmn_select_confident_samples(img_text, 0.1, at_least)
        dmnet.init_pred = confidence_prediction.mean(0, keepdim=True)
        dmnet.update_memory_bank(model)
        img_global_pred = dmnet.get_image_pred(model)
        outputs.append((img_text_pred * 1.0 + img_global_pred * weight)[0])
    return torch.stack(outputs), model


@pytest.mark.parametrize("n_views,memory_size", [(1, 3), (20, 3), (33, 50)])
def test_dmn_equals_the_authors_loop(n_views, memory_size):
    classes, scale = 4, 30.0
    stream, text = stream_views(70, n_views, classes, seed=5), unit(classes, D, seed=6)
    head = DMNHead(clip_base(text, scale), memory_size, weight=0.3, logit_scale=scale)
    scores = head.logits(stream[:, 0], stream[:, 1:] if n_views > 1 else None)
    expected, model = dmn_loop(list(stream), text, memory_size, 5.5, 0.3, scale, n_views < 10)
    assert model.replaced > 5 or memory_size == 50
    torch.testing.assert_close(scores, expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(streamed(head, stream), expected, atol=1e-6, rtol=0)


# --------------------------------------------------------------------------- OnZeta


def onzeta_loop(
    image_feat, text_classifier, n, tau_t=0.01, tau_i=0.04, cw=0.5, cr=20, alpha=1, beta0=0.8
):
    """The loop of ``main_online.py`` over ``image_feat`` in stream order (``idx`` the
    identity), its ``combo_label`` rows; ``n`` the stream's length."""
    num_class = text_classifier.shape[1]
    combo_label = torch.zeros(len(image_feat), num_class, dtype=torch.float64)
    w = text_classifier.clone()
    rho = torch.zeros(num_class, dtype=torch.float64)
    for i in range(len(image_feat)):
        lr = cw / math.sqrt(i + 1)
        rlr = cr / math.sqrt(i + 1)
        beta = beta0 * math.sqrt((i + 1) / n)
        x = image_feat[i, :]
        tlabel = F.softmax(x @ text_classifier / tau_t, dim=0)
        tlabel = tlabel * torch.exp(rho)
        tlabel /= torch.sum(tlabel)
        rho -= rlr * (tlabel - alpha / num_class)
        rho[rho < 0] = 0
        vision_label = F.softmax(x @ w / tau_i, dim=0)
        combo_label[i, :] = beta * vision_label + (1 - beta) * tlabel
        grad = torch.outer(x, vision_label - tlabel)
        w -= (lr / tau_i) * grad
        w = F.normalize(w, dim=0)
    return combo_label


@pytest.mark.parametrize("alpha,beta", [(1.0, 0.8), (0.0, 0.4)])
def test_onzeta_equals_the_authors_loop(alpha, beta):
    classes, n = 6, 300
    images, text = stream_views(n, 1, classes, seed=7)[:, 0], unit(classes, D, seed=8)
    head = OnZetaHead(clip_base(text, 100.0), alpha=alpha, beta=beta)
    expected = onzeta_loop(images, text.T, n, alpha=alpha, beta0=beta)
    torch.testing.assert_close(head.logits(images), expected, atol=1e-6, rtol=0)
    stream = head.stream(n)
    chunks = [stream.logits(images[lo:hi]) for lo, hi in [(0, 1), (1, 130), (130, 131), (131, n)]]
    torch.testing.assert_close(torch.cat(chunks), expected, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="holds 300 images"):
        stream.logits(images[:1])


def test_onzeta_streams_float32_features_in_chunks_as_in_one_call():
    """OnZeta's updates feed back into every later image: kept in float32 their rounding grows
    until one call and the same stream in chunks predict differently; kept in float64 (its
    state and arithmetic, whatever the features' precision) they agree."""
    classes, n = 10, 480
    images = stream_views(n, 1, classes, seed=4, spread=1.0)[:, 0].float()
    head = OnZetaHead(clip_base(unit(classes, D, seed=54).float(), 100.0))
    whole = head.logits(images)
    stream, cuts = head.stream(n), [0, 1, 57, 130, 200, 333, n]
    chunked = torch.cat(
        [stream.logits(images[lo:hi]) for lo, hi in zip(cuts, cuts[1:], strict=False)]
    )
    assert whole.dtype == chunked.dtype == torch.float32
    assert torch.equal(whole.argmax(-1), chunked.argmax(-1))
    torch.testing.assert_close(whole, chunked, atol=1e-5, rtol=0)


# --------------------------------------------------------------------------- LaZSL


class OP_d:
    """``OP_d`` of LaZSL's OP.py (``gama`` and the -10 kept in float64, not half)."""

    def __init__(self, max_iter, gama, alpha, constrain_type="const"):
        self.max_iter = max_iter
        self.n_cls = 1
        self.eps = 0.1
        self.gama = torch.tensor(gama, dtype=torch.float64)
        self.zero = torch.tensor(-10, dtype=torch.float64)
        self.constrain_type = constrain_type
        self.alpha = alpha

    def Sinkhorn(self, K, u, v):
        r = torch.ones_like(u)
        c = torch.ones_like(v)
        thresh = 1e-2
        for _ in range(self.max_iter):
            r0 = r
            r = u / torch.matmul(K, c.unsqueeze(-1)).squeeze(-1)
            c = v / torch.matmul(K.permute(0, 2, 1).contiguous(), r.unsqueeze(-1)).squeeze(-1)
            err = (r - r0).abs().mean()
            if err.item() < thresh:
                break
        T = torch.matmul(r.unsqueeze(-1), c.unsqueeze(-2)) * K
        return T

    def get_OP_distence(
        self,
        image_features,
        text_features,
        sim_rg=None,
        is_constrain=False,
        is_cost_global=False,
        is_sim_global=False,
    ):
        self.N = text_features.shape[0]
        self.b = image_features.shape[1]
        self.M = image_features.shape[0]
        sim = torch.einsum("mbd,nd->mnb", image_features, text_features).contiguous()
        sim = sim.view(self.M, self.N, self.b * self.n_cls)
        sim = sim.permute(2, 0, 1)
        if is_cost_global:
            global_sim = sim[:, 0, :].unsqueeze(1)
            region_sim = sim[:, 1:, :]
            sim_global = (1 - self.alpha) * global_sim + (self.alpha * region_sim)
            sim = region_sim
            self.M = sim_global.shape[1]
        if self.constrain_type == "patch":
            gama = torch.mean(sim, dim=(1, 2), keepdim=True)
        elif self.constrain_type == "att":
            gama = torch.mean(sim, dim=2, keepdim=True)
        mask_att = sim < gama
        wdist = 1.0 - sim
        if is_cost_global:
            wdist = 1.0 - sim_global
        xx = torch.zeros(self.b * self.n_cls, self.M, dtype=sim.dtype).fill_(1.0 / self.M)
        yy = torch.zeros(self.b * self.n_cls, self.N, dtype=sim.dtype).fill_(1.0 / self.N)
        if sim_rg is not None:
            sim_mean = torch.mean(sim_rg, dim=1, keepdim=True) + self.gama
            mask = sim_rg < sim_mean
            if mask.shape[1] != xx.shape[1]:
                mask_g = torch.zeros((mask.shape[0], 1), dtype=torch.bool)
                mask = torch.cat((mask_g, mask), dim=1)
            neg_mask = ~mask
            xx[mask] = 0
            x = torch.ones(self.b, dtype=sim.dtype) / torch.count_nonzero(xx, dim=1)
            xx = torch.where(neg_mask, x.unsqueeze(-1), xx)
        KK = -wdist / self.eps
        if is_constrain:
            KK[mask_att] = self.zero
        KK = torch.exp(KK)
        T = self.Sinkhorn(KK, xx, yy)
        if torch.isnan(T).any():
            return None
        if is_constrain:
            sim[mask_att] = 0
        sim_op = torch.sum(T * sim, dim=(1, 2))
        if is_sim_global:
            sim_op = torch.sum(T * sim_global, dim=(1, 2))
        sim_op = sim_op.contiguous().view(self.b)
        return sim_op


def lazsl_loop(views, descriptions, alpha=0.8, gamma=0.0):
    """``main_OP.py``'s scoring of one batch of one image at a time: ``views [B, 1 + M, D]``,
    ``descriptions`` a list per class of ``[N_c, D]``."""
    op_d = OP_d(max_iter=100, gama=gamma, constrain_type="att", alpha=alpha)
    scores = []
    for image in views:
        image_encodings = image[:, None]  # [1 + M, b=1, D]
        sim_rg = torch.einsum("nbd,bd->bn", image_encodings[1:], image_encodings[0])
        per_class = [
            op_d.get_OP_distence(
                image_features=image_encodings,
                text_features=v,
                sim_rg=sim_rg,
                is_cost_global=True,
                is_sim_global=True,
            )
            for v in descriptions
        ]
        scores.append(torch.stack(per_class, dim=1)[0])
    return torch.stack(scores)


@pytest.mark.parametrize("n_crops,gamma", [(6, 0.0), (30, 0.0), (30, 0.02)])
def test_lazsl_equals_the_authors_loop(n_crops, gamma):
    classes = 5
    counts = [3, 1, 4, 2, 5]
    views = stream_views(10, 1 + n_crops, classes, seed=9, spread=0.4)
    descriptions = [unit(k, D, seed=20 + c) for c, k in enumerate(counts)]
    emb = torch.zeros(classes, max(counts), D, dtype=torch.float64)
    mask = torch.zeros(classes, max(counts), dtype=torch.bool)
    for c, rows in enumerate(descriptions):
        emb[c, : len(rows)], mask[c, : len(rows)] = rows, True
    head = LaZSLHead(emb, mask, gamma=gamma)
    expected = lazsl_loop(views, descriptions, gamma=gamma)
    torch.testing.assert_close(head.logits(views[:, 0], views[:, 1:]), expected, atol=1e-6, rtol=0)


def test_lazsl_keeps_the_crop_closest_to_the_full_view_when_no_crop_passes_gamma():
    """With gamma > 0 no crop may reach mean + gamma (the authors' code returns None there):
    the crop closest to the full view stands alone, as the authors' loop scores an image of
    that one crop; never NaN."""
    classes, n_crops, counts = 5, 12, [3, 1, 4, 2, 5]
    views = stream_views(8, 1 + n_crops, classes, seed=9, spread=0.4)
    descriptions = [unit(k, D, seed=20 + c) for c, k in enumerate(counts)]
    emb = torch.zeros(classes, max(counts), D, dtype=torch.float64)
    mask = torch.zeros(classes, max(counts), dtype=torch.bool)
    for c, rows in enumerate(descriptions):
        emb[c, : len(rows)], mask[c, : len(rows)] = rows, True
    scores = LaZSLHead(emb, mask, gamma=1.5).logits(views[:, 0], views[:, 1:])
    closest = torch.einsum("bmd,bd->bm", views[:, 1:], views[:, 0]).argmax(1)
    alone = torch.stack([views[:, 0], views[torch.arange(len(views)), 1 + closest]], dim=1)
    assert torch.isfinite(scores).all()
    torch.testing.assert_close(scores, lazsl_loop(alone, descriptions), atol=1e-6, rtol=0)


# --------------------------------------------------------------------------- the registry


def hash_encoder(texts):
    """Texts -> unit vectors seeded by the text (the same text, the same vector)."""
    seeds = [int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) for text in texts]
    rows = [torch.randn(D, generator=torch.Generator().manual_seed(seed)) for seed in seeds]
    return F.normalize(torch.stack(rows), dim=-1)


@pytest.fixture
def sources():
    names = ["red fox", "grey wolf", "tabby cat", "snow owl"]
    return TextSources(
        classnames=names,
        sentences={
            n: [f"a {n} in the snow.", f"the {n} has fur.", f"a photo of {n}."] for n in names
        },
        descriptors={n: ["a pointed snout", "four legs", f"the colour of a {n}"] for n in names},
    )


ONLINE = ("tda", "tda+wca", "dmn", "boostadapter", "onzeta")


@pytest.mark.parametrize("method", ONLINE)
def test_online_heads_follow_the_stream_contract(method, sources):
    options = {} if method == "onzeta" else {"logit_scale": 20.0}  # memories that matter
    head = build_head(method, hash_encoder, sources, **options)
    assert head.online is True and head.n_draws == 1 and head.uses_crops in (True, False)
    views = stream_views(40, 12, 4, seed=10).float()
    image, crops = views[:, 0], views[:, 1:]
    whole = head.logits(image, crops)
    assert whole.shape == (40, 4) and torch.isfinite(whole).all()
    stream = head.stream(40)
    chunks = [stream.logits(image[lo:hi], crops[lo:hi]) for lo, hi in [(0, 9), (9, 10), (10, 40)]]
    torch.testing.assert_close(torch.cat(chunks), whole, atol=1e-5, rtol=0)
    fresh = head.stream(40).logits(image[10:], crops[10:])  # an empty memory again
    assert (fresh - whole[10:]).abs().max() > 1e-3


@pytest.mark.parametrize("method", ["tda", "tda+wca", "boostadapter"])
def test_tda_and_boostadapter_take_the_models_logit_scale_and_say_so(method, sources):
    """The authors hard-code 100 (OpenAI CLIP's); ours is the model's, given explicitly it is
    the value given; the result file's options say so."""
    from types import SimpleNamespace

    from wca.config import MethodConfig

    encoder = SimpleNamespace(encode_texts=hash_encoder, logit_scale=25.4)
    assert build_head(method, encoder, sources).base.scale == 25.4
    assert build_head(method, encoder, sources, logit_scale=100.0).base.scale == 100.0
    assert MethodConfig(name=method).resolved_options()["logit_scale"] == "model"


@pytest.mark.parametrize("option", ["neg_entropy", "neg_mask"])
def test_inverted_bounds_are_refused(option, sources):
    """TDA's thresholds are intervals (lower, upper): an inverted one is an error naming it."""
    from wca.config import resolve_config
    from wca.errors import SettingError

    with pytest.raises(ValueError, match="the lower bound 0.5 is above the upper 0.2"):
        build_head("tda", hash_encoder, sources, **{option: (0.5, 0.2)})
    with pytest.raises(SettingError, match=f"methods.tda.{option}: the lower bound 0.5"):
        resolve_config("cub", overrides={f"methods.tda.{option}": [0.5, 0.2]})
    build_head("tda", hash_encoder, sources, **{option: (0.2, 0.2)})  # an empty interval


def test_per_image_heads_are_not_online(sources):
    for method in ("clip", "wca", "lazsl", "zero"):
        assert not getattr(build_head(method, hash_encoder, sources), "online", False)


def test_per_dataset_defaults(sources):
    def build(method, **options):
        return build_head(method, hash_encoder, sources, **options)

    tda = build("tda")
    assert (tda.pos_alpha, tda.pos_beta, tda.views, tda.uses_crops) == (2.0, 5.0, "full", False)
    shifted = build("tda", dataset="imagenet_r")
    assert (shifted.pos_alpha, shifted.pos_beta, shifted.views) == (1.0, 8.0, "confident")
    assert shifted.uses_crops
    sketch = build("boostadapter", dataset="imagenet-sketch", pos_alpha=3.0)
    assert (sketch.pos_alpha, sketch.pos_beta, sketch.delta, sketch.views) == (
        3.0,
        7.45,
        1,
        "confident",
    )
    food = build("boostadapter", dataset="food101")
    assert (food.pos_alpha, food.pos_beta, food.delta, food.views) == (1.0, 1.0, 3, "full")
    assert build("tda", dataset="oxford_pet").pos_beta == 7.0  # the WCA authors' spelling
    assert build("tda", dataset="cub").pos_beta == 5.0  # not in TDA's configs: ImageNet's
    assert (build("dmn").weight, build("dmn", dataset="dtd").weight) == (1.0, 10.0)
    assert (build("onzeta").beta, build("onzeta", dataset="dtd").beta) == (0.8, 0.4)
    assert build("onzeta", dataset="caltech101").alpha == 0.0
    assert build("tda", dataset="imagenet-a", views="full").views == "full"


def test_lazsl_uses_clip_d_prompts_with_the_imagenet_full_stop(sources):
    seen = []

    def encoder(texts):
        seen.extend(texts)
        return hash_encoder(texts)

    build_head("lazsl", encoder, sources)
    build_head("lazsl", encoder, sources, dataset="cub")
    assert "red fox, which is a pointed snout." in seen and "red fox, which has four legs" in seen
    with pytest.raises(ValueError, match="crop embeddings"):
        build_head("lazsl", hash_encoder, sources).logits(unit(2, D))


def test_bad_options_are_one_clear_error(sources):
    cases = [
        ("tda", {"views": "crops"}, "views"),
        ("tda", {"base": "nope"}, "base: unknown method 'nope'"),
        ("dmn", {"base": "tda"}, "base: 'tda' is an online method"),
        ("tda+wca", {"base": "clip"}, "no option base"),
        ("onzeta", {"tau_t": 0}, "tau_t"),
        ("boostadapter", {"delta": -1}, "delta"),
        ("tda", {"neg_entropy": [0.2]}, "neg_entropy"),
    ]
    for method, options, message in cases:
        with pytest.raises(ValueError, match=message):
            build_head(method, hash_encoder, sources, **options)


def test_tda_on_wca_keys_the_cache_by_the_weighted_crop_mean(sources):
    tda = build_head("tda", hash_encoder, sources)
    tda_wca = build_head("tda+wca", hash_encoder, sources)
    wca = build_head("wca", hash_encoder, sources)
    assert tda_wca.uses_crops and type(tda_wca.base.head) is type(wca)
    views = stream_views(30, 12, 4, seed=11).float()
    ours = tda_wca.logits(views[:, 0], views[:, 1:])
    assert not torch.allclose(ours, tda.logits(views[:, 0], views[:, 1:]))
    # the first image meets only itself in the positive cache: wca logits + alpha exp(0)
    first = 100.0 * wca.logits(views[:1, 0], views[:1, 1:])
    first[0, first.argmax()] += tda_wca.pos_alpha
    torch.testing.assert_close(ours[:1], first)


def test_a_base_without_class_vectors_lends_clip_its_own(sources):
    dmn = build_head("dmn", hash_encoder, sources, base="zero")
    clip = build_head("clip", hash_encoder, sources)
    torch.testing.assert_close(dmn.base.text, clip.text_features())
    mta = build_head("onzeta", hash_encoder, sources, base="mta", tau_t=0.02)
    assert mta.base.scale == 1.0 and mta.base.head.logit_scale == 50.0
