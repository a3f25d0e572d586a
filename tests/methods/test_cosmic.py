"""COSMIC against a plain loop-per-image float64 transcription of the authors' code
(hf618/COSMIC ``cosmic_main.py`` ``direct_inference`` with their scripts' flags:
``--clip_is_DMN --center_type_clip attn --center_type_dino default --is_SOG
--use_clip_clique --use_dino_clique`` and the degree control; ``utils/DualMems.py``;
``utils/utils_cosmic.py``), dict caches and loops as they write them (no ``.cuda()``/
``.half()``/autocast; networkx 3's ``from_numpy_array`` for the removed ``from_numpy_matrix``).
Their output is summed with searched weights; here fixed ones."""

from __future__ import annotations

import math
import operator

import networkx as nx
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from wca.evaluate import evaluate, run_indices, stream_order
from wca.features import Features
from wca.methods import TextSources, build_head
from wca.methods.cosmic import COSMICHead
from wca.methods.cosmic_graph import degree_graph
from wca.methods.online import Base
from wca.methods.prompts import PromptHead

D, D2 = 12, 7


def unit(*shape, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=generator, dtype=torch.float64), dim=-1)


def stream_views(n_images, n_views, classes, seed=0, spread=0.6):
    """Views ``[B, V, D]`` (noisy copies of a class prototype) and the same images seen by a
    second encoder ``[B, D2]`` (its raw embeddings), so pseudo-labels vary and every memory
    fills."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(classes, (n_images,), generator=generator)
    noise = torch.randn(n_images, n_views, D, generator=generator, dtype=torch.float64)
    views = F.normalize(unit(classes, D, seed=seed + 100)[labels][:, None] + spread * noise, dim=-1)
    noise = torch.randn(n_images, D2, generator=generator, dtype=torch.float64)
    aux = unit(classes, D2, seed=seed + 200)[labels] + spread * noise  # not normalised
    return views, aux


# --------------------------------------------------------------------------- utils_cosmic.py


def select_confident_samples(prob, top):
    batch_entropy = -(prob * torch.log(prob + 1e-6)).sum(1)
    n_select = max(1, int(batch_entropy.size()[0] * top))
    idx = torch.argsort(batch_entropy, descending=False)[:n_select]
    idx_confused = torch.argsort(batch_entropy, descending=False)[n_select:]
    return prob[idx], idx, prob[idx_confused], idx_confused


def avg_entropy(outputs):
    logits = outputs - outputs.logsumexp(dim=-1, keepdim=True)
    avg_logits = logits.logsumexp(dim=0) - np.log(logits.shape[0])
    min_real = torch.finfo(avg_logits.dtype).min
    avg_logits = torch.clamp(avg_logits, min=min_real)
    return -(avg_logits * torch.exp(avg_logits)).sum(dim=-1)


class Counted(dict):
    """A cache dict that counts the entries replaced (to check the stream exercised them)."""

    replaced = 0


def update_cache(cache, pred, features_loss, shot_capacity):
    updated = False
    item = features_loss
    if pred in cache:
        if len(cache[pred]) < shot_capacity:
            cache[pred].append(item)
            updated = True
        elif features_loss[1] < cache[pred][-1][1]:
            cache[pred][-1] = item
            updated = True
            cache.replaced += 1
        cache[pred] = sorted(cache[pred], key=operator.itemgetter(1))
    else:
        cache[pred] = [item]
        updated = True
    return updated


def compute_clique_logits(image_features, anchor_feat, target_feat, max_cliques, R, alpha, beta):
    affinity_0 = torch.mm(image_features, anchor_feat.T)
    top_R_count = max(1, int(len(max_cliques) * R))  # noqa: N806
    topk_values, topk_indices = torch.topk(affinity_0, k=top_R_count, dim=-1)
    mac_idxs = torch.unique(topk_indices, sorted=True)
    relevant_indices = torch.unique(
        torch.cat([torch.tensor(max_cliques[idx.item()]) for idx in mac_idxs])
    ).tolist()
    relevant_target_features = torch.index_select(target_feat, 0, torch.tensor(relevant_indices))
    affinity = torch.mm(image_features, relevant_target_features.T)
    cache_values = F.one_hot(torch.tensor(relevant_indices), num_classes=target_feat.size(0))
    logits = ((-1) * (beta - beta * affinity)).exp() @ cache_values.double()
    logits = alpha * logits
    full_logits = torch.zeros((1, target_feat.shape[0]), dtype=torch.float64)
    full_logits[0, relevant_indices] = logits.squeeze()[relevant_indices]
    return full_logits


def build_graph_by_degree(similarity_matrix, target_avg_degree, tol=1e-2, max_iter=100):
    n = similarity_matrix.shape[0]
    low, high = similarity_matrix.min().item(), similarity_matrix.max().item()
    for _ in range(max_iter):
        mid = (low + high) / 2
        adj_matrix = (similarity_matrix > mid).double()
        adj_matrix.fill_diagonal_(0)
        avg_degree = adj_matrix.sum() / n
        if abs(avg_degree - target_avg_degree) < tol:
            break
        elif avg_degree < target_avg_degree:
            high = mid
        else:
            low = mid
    return adj_matrix, avg_degree


def make_max_cliques(text_feat, control, is_SOG=True):  # noqa: N803
    similarity_matrix = torch.mm(text_feat, text_feat.T)
    control_method, control_value = control
    adjacency_matrix, value = build_graph_by_degree(similarity_matrix, control_value, 1e-2, 500)
    if is_SOG:
        adjacency_matrix1 = torch.mm(adjacency_matrix, adjacency_matrix)
        adjacency_matrix2 = adjacency_matrix * adjacency_matrix1
        adjacency_matrix = (adjacency_matrix2 > 1).double()
    G = nx.from_numpy_array(adjacency_matrix.cpu().numpy())  # noqa: N806
    cliques = list(nx.find_cliques(G))
    max_cliques = []
    for clique in cliques:
        if len(clique) == len(set(clique)):
            max_cliques.append(clique)
    all_nodes = set(range(text_feat.size(0)))
    nodes_in_cliques = set(node for clique in max_cliques for node in clique)
    for node in all_nodes - nodes_in_cliques:
        if max_cliques:
            max_cliques[0].append(node)
        else:
            max_cliques.append([node])
    cliques_feat_anchor = torch.stack(
        [torch.mean(text_feat[clique], dim=0) for clique in max_cliques]
    )
    return max_cliques, cliques_feat_anchor, None


def make_prototype_features(dinov2_cache, n_class, n_dim):
    prototype_features = torch.zeros((n_class, n_dim), dtype=torch.float64)
    for class_id, features in dinov2_cache.items():
        if features:
            tensors = torch.stack([feature[0] for feature in features])
            prototype_features[class_id] = tensors.mean(dim=0)
    return prototype_features


# --------------------------------------------------------------------------- DualMems.py


class Model:
    """The attributes of their ``ClipFix`` that ``DualMem`` and ``direct_inference`` read."""

    def __init__(self, text_feat, memory_size, scale):
        n_cls, dim = text_feat.shape
        self.text_feat = text_feat
        self.fixed_global_feat_vanilla = text_feat.clone().unsqueeze(1)
        self.image_feature_memory = torch.zeros(n_cls, memory_size, dim, dtype=text_feat.dtype)
        self.image_prediction_mem = torch.zeros(n_cls, memory_size, n_cls, dtype=text_feat.dtype)
        self.image_entropy_mem = torch.zeros(n_cls, memory_size, dtype=text_feat.dtype)
        self.image_feature_count = torch.zeros(n_cls, 1).long()
        self.memory_size_clip = memory_size
        self.logit_scale = torch.tensor(math.log(scale), dtype=text_feat.dtype)
        self.replaced = 0


class DualMem:
    """``DualMem`` as COSMIC runs it: parameters zeros, ``position="all"``, centre ``attn``."""

    def __init__(self, beta, feat_dim, class_num):
        self.beta = beta
        zeros = torch.zeros((class_num, feat_dim), dtype=torch.float64)
        self.global_bias = self.global_bias_key = self.global_bias_value = zeros
        self.global_ffn_bias = zeros
        self.init_pred = 0

    def update_memory_bank(self, model, selected_idx=None):
        updated = False
        mean_prob = self.init_pred[0]
        value, indice = mean_prob.max(0)
        pseudo_label = indice.item()
        if selected_idx is not None:
            selected_image_features_global = (
                model.image_features_global[selected_idx].mean(0).unsqueeze(0)
            )
        else:
            selected_image_features_global = model.image_features_global[:1]
        current_instance_entropy = -(mean_prob * (torch.log(mean_prob + 1e-8))).sum()
        if model.image_feature_count[pseudo_label] == model.memory_size_clip:
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
                updated = True
                model.replaced += 1
        else:
            count = model.image_feature_count[pseudo_label, 0].item()
            model.image_feature_memory[pseudo_label][count] = selected_image_features_global
            model.image_prediction_mem[pseudo_label][count] = mean_prob[0]
            model.image_entropy_mem[pseudo_label][count] = current_instance_entropy
            model.image_feature_count[pseudo_label] += 1
            updated = True
        return updated

    def get_image_pred(self, model):
        img_feat = model.image_features_global[:1]
        memorized_image_feat = torch.cat(
            (model.image_feature_memory, model.fixed_global_feat_vanilla), dim=1
        )
        img_feat_mappling = img_feat
        memorized_image_feat_K = memorized_image_feat[:, 1:, :]  # noqa: N806, F841
        # position "all" (their default) replaces both slices with the whole memory:
        img_feat_mappling = img_feat + self.global_bias.mean(0, keepdim=True)
        memorized_image_feat_K = memorized_image_feat + self.global_bias_key.unsqueeze(1)  # noqa: N806
        memorized_image_feat_V = memorized_image_feat + self.global_bias_value.unsqueeze(1)  # noqa: N806
        memorized_image_feat_K = memorized_image_feat_K / memorized_image_feat_K.norm(  # noqa: N806
            dim=-1, keepdim=True
        )
        memorized_image_feat_K[memorized_image_feat.sum(-1) == 0] = 0
        memorized_image_feat_V = memorized_image_feat_V / memorized_image_feat_V.norm(  # noqa: N806
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
        self.adaptive_image_feat = adaptive_image_feat
        return logits.softmax(dim=1)

    def get_text_prediction(self, model):
        logit_scale = model.logit_scale.exp()
        text_feat = model.text_feat / model.text_feat.norm(dim=1, keepdim=True)
        img_text_logit = logit_scale * model.image_features_global @ text_feat.t()
        return img_text_logit.softmax(-1)


# --------------------------------------------------------------------------- cosmic_main.py


def cosmic_loop(views, aux, text, shots, cfg, weights, scale, mac_step, degree=5.0, r=0.2):
    """``direct_inference`` image by image: the COSMIC output ``pred_vanilla + beta4 MAC1 +
    beta5 MAC2`` (without ``aux``: their CLIP-only run, ``pred_vanilla + beta4 MAC1``)."""
    class_num = text.shape[0]
    model = Model(text, shots[0], scale)
    cache_net = DualMem(5.5, text.shape[1], class_num)
    dinov2_cache = Counted()
    control1, control2 = ("degree", degree * 0.8), ("degree", degree)
    outputs = []
    for i, images in enumerate(views):
        model.image_features_global = images
        img_text = cache_net.get_text_prediction(model)
        img_text_pred = img_text[:1]
        confidence_prediction, selected_idx, _, _ = select_confident_samples(img_text, 0.1)
        cache_net.init_pred = confidence_prediction.mean(0, keepdim=True)
        is_clip_cache_update = cache_net.update_memory_bank(model, selected_idx)
        img_global_pred = cache_net.get_image_pred(model)
        temp_pred = img_text_pred + img_global_pred
        loss = avg_entropy(temp_pred)
        pred = int(temp_pred.topk(1, 1, True, True)[1].squeeze().item())
        if aux is not None:
            x_norm_clstoken = aux[i : i + 1]
            img_feats_dinov2 = x_norm_clstoken / x_norm_clstoken.norm(dim=-1, keepdim=True)
            is_dinov2_cache_update = update_cache(
                dinov2_cache, pred, [img_feats_dinov2, loss], shots[1]
            )
        clip_both_feats_space = torch.cat(
            (model.text_feat, cache_net.adaptive_image_feat.squeeze(0)), dim=0
        )
        situation2 = i % mac_step == 0 and i > class_num * shots[0]
        situation3 = is_clip_cache_update and i <= class_num * shots[0]
        if situation2 or situation3:
            max_cliques1, anchor1, _ = make_max_cliques(clip_both_feats_space, control1)
        mac_logits1 = compute_clique_logits(
            images[:1], anchor1, clip_both_feats_space, max_cliques1, r, cfg[0], cfg[1]
        )
        first_half = mac_logits1[:, : mac_logits1.shape[1] // 2]
        second_half = mac_logits1[:, mac_logits1.shape[1] // 2 :]
        output = img_text_pred + weights[0] * (first_half + second_half) / 2
        if aux is not None:
            dinov2_prototypes = make_prototype_features(dinov2_cache, class_num, aux.shape[1])
            situation2 = i % mac_step == 0 and i > class_num * shots[1]
            situation3 = is_dinov2_cache_update and i <= class_num * shots[1]
            if situation2 or situation3:
                max_cliques2, anchor2, _ = make_max_cliques(dinov2_prototypes, control2)
            mac_logits2 = compute_clique_logits(
                img_feats_dinov2, anchor2, dinov2_prototypes, max_cliques2, r, cfg[0], cfg[1]
            )
            output = output + weights[1] * mac_logits2
        outputs.append(output[0])
    return torch.stack(outputs), model, dinov2_cache


def clip_base(text, scale):
    return Base(PromptHead(text[None]), scale, text)


def streamed(head, views, aux, cuts=(0, 7, 8, 30)):
    """The head's outputs over ``views [B, V, D]`` fed to one stream in uneven chunks."""
    stream, bounds = head.stream(len(views)), [*cuts, len(views)]
    chunks = []
    for lo, hi in zip(bounds, bounds[1:], strict=False):
        crops = views[lo:hi, 1:] if views.shape[1] > 1 else None
        chunks.append(
            stream.logits(views[lo:hi, 0], crops, aux_emb=None if aux is None else aux[lo:hi])
        )
    return torch.cat(chunks)


@pytest.mark.parametrize("dual", [True, False])
@pytest.mark.parametrize("n_views,shots,classes", [(1, (3, 2), 5), (12, (2, 3), 8)])
def test_cosmic_equals_the_authors_loop(dual, n_views, shots, classes):
    scale, cfg, weights = 30.0, (2.0, 5.0), (0.7, 1.3)
    views, aux = stream_views(64, n_views, classes, seed=n_views)
    aux = aux if dual else None
    text = unit(classes, D, seed=6)
    head = COSMICHead(
        clip_base(text, scale), *shots, *cfg, rebuild_every=7, clip_weight=weights[0],
        dino_weight=weights[1], logit_scale=scale,
    )  # fmt: skip
    crops = views[:, 1:] if n_views > 1 else None
    scores = head.logits(views[:, 0], crops, aux_emb=aux)
    expected, model, dino = cosmic_loop(list(views), aux, text, shots, cfg, weights, scale, 7)
    assert model.replaced > 3 and (model.image_feature_count == shots[0]).all()
    if dual:
        assert dino.replaced > 3 and all(len(dino[c]) == shots[1] for c in range(classes))
    torch.testing.assert_close(scores, expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(streamed(head, views, aux), expected, atol=1e-6, rtol=0)


def test_the_second_encoder_changes_the_scores_and_stays_for_the_stream():
    views, aux = stream_views(30, 6, 4, seed=2)
    head = COSMICHead(clip_base(unit(4, D, seed=3), 30.0), 2, 2, logit_scale=30.0)
    alone, both = (
        head.logits(views[:, 0], views[:, 1:]),
        head.logits(views[:, 0], views[:, 1:], aux_emb=aux),
    )
    assert (both - alone).abs().max() > 1e-2 and (both >= alone - 1e-12).all()
    stream = head.stream()
    stream.logits(views[:5, 0], views[:5, 1:], aux_emb=aux[:5])
    with pytest.raises(ValueError, match="aux_emb for every image of a stream"):
        stream.logits(views[5:, 0], views[5:, 1:])
    with pytest.raises(ValueError, match="aux_emb has 3 rows for 5 images"):
        head.logits(views[:5, 0], views[:5, 1:], aux_emb=aux[:3])


def test_the_degree_bisection_stops_where_the_authors_loop_settles():
    """Where no threshold gives the target degree, their 500 rounds settle on one threshold;
    stopping when it repeats gives the same graph."""
    for seed, target in [(0, 4.0), (1, 5.0), (2, 50.0), (3, 0.3)]:
        space = unit(9, D, seed=seed)
        similarity = space @ space.T
        theirs, _ = build_graph_by_degree(similarity, target, 1e-2, 500)
        assert torch.equal(degree_graph(similarity, target), theirs.bool())


# --------------------------------------------------------------------------- the registry


def hash_encoder(texts):
    rows = [unit(D, seed=sum(map(ord, t)) * 31 + len(t)).float() for t in texts]
    return torch.stack(rows)


@pytest.fixture
def sources():
    names = ["red fox", "grey wolf", "tabby cat", "snow owl"]
    sentences = {n: [f"a {n} in the snow.", f"the {n} has fur."] for n in names}
    return TextSources(classnames=names, sentences=sentences)


@pytest.mark.parametrize("method", ["cosmic", "cosmic+wca"])
@pytest.mark.parametrize("dual", [True, False])
def test_cosmic_follows_the_stream_contract(method, dual, sources):
    head = build_head(method, hash_encoder, sources, logit_scale=20.0, clip_shots=2)
    assert head.online is True and head.n_draws == 1 and head.uses_crops
    views, aux = stream_views(40, 12, 4, seed=10)
    image, crops, aux = views[:, 0].float(), views[:, 1:].float(), aux.float() if dual else None
    whole = head.logits(image, crops, aux_emb=aux)
    assert whole.shape == (40, 4) and torch.isfinite(whole).all()
    probabilities = head.probabilities(whole, 100.0)
    torch.testing.assert_close(probabilities.sum(-1), torch.ones(40))
    stream = head.stream(40)
    chunks = [
        stream.logits(image[lo:hi], crops[lo:hi], aux_emb=None if aux is None else aux[lo:hi])
        for lo, hi in [(0, 9), (9, 10), (10, 40)]
    ]
    torch.testing.assert_close(torch.cat(chunks), whole, atol=1e-5, rtol=0)
    rest = None if aux is None else aux[10:]
    fresh = head.stream(40).logits(image[10:], crops[10:], aux_emb=rest)  # an empty memory
    assert (fresh - whole[10:]).abs().max() > 1e-3


def test_cosmic_per_dataset_defaults_and_options(sources):
    def build(**options):
        return build_head("cosmic", hash_encoder, sources, **options)

    head = build()
    assert (head.clip_shots, head.dino_shots, head.alpha, head.beta) == (16, 16, 2.0, 5.0)
    assert (head.memory_beta, head.degree, head.ratio, head.rebuild_every) == (5.5, 5.0, 0.2, 100)
    pets = build(dataset="oxford_pet")
    assert (pets.clip_shots, pets.dino_shots, pets.alpha, pets.beta) == (8, 8, 2.0, 7.0)
    sketch = build(dataset="imagenet-sketch", dino_shots=4)
    assert (sketch.clip_shots, sketch.dino_shots, sketch.alpha) == (16, 4, 2.363)
    assert build(dataset="cub").clip_shots == 16  # not among their datasets: ImageNet's
    with pytest.raises(ValueError, match="ratio"):
        build(ratio=0)
    with pytest.raises(ValueError, match="no option base"):
        build_head("cosmic+wca", hash_encoder, sources, base="clip")


def test_the_same_seed_gives_the_same_stream(sources):
    """Through ``evaluate``: the same seed streams the same orders whatever the chunks; a head
    scored in that order by hand gives the same correctness."""
    views, _ = stream_views(30, 5, 4, seed=12)
    labels = torch.arange(30) % 4
    boxes = torch.zeros(30, 4, 4, dtype=torch.long)
    features = Features(views[:, 0].float(), views[:, 1:].float(), boxes, labels)
    heads = {
        "cosmic": build_head("cosmic", hash_encoder, sources, logit_scale=20.0, clip_shots=2),
        "bifta": build_head("bifta", hash_encoder, sources),
    }
    first = evaluate(features, heads, n_run=3, patch_n=4, seed=5, chunk_size=7)
    again = evaluate(features, heads, n_run=3, patch_n=4, seed=5, chunk_size=30)
    other = evaluate(features, heads, n_run=3, patch_n=4, seed=6, chunk_size=7)
    for name in heads:
        assert np.array_equal(first.methods[name].correct, again.methods[name].correct)
    assert not np.array_equal(first.methods["cosmic"].correct, other.methods["cosmic"].correct)
    indices = run_indices(4, 3, 4, 5, "pool")
    for run in range(3):
        order = stream_order(30, 5, run)
        crops = features.crop_emb[order][:, indices[run]]
        logits = heads["cosmic"].logits(features.image_emb[order], crops)
        hits = (logits.argmax(-1) == labels[order]).numpy()
        assert np.array_equal(first.methods["cosmic"].correct[run, order.numpy()], hits)
