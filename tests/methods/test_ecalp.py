"""ECALP against a plain loop-per-image float64 transcription of its authors' zero-shot code:
Yushu-Li/ECALP ``main.py`` (the loop over ``cat(features[:i + 1], features[i])``) and
``utils/iterative_label_propagation.py`` (``edge_reweighting``, ``dynamic_graph_expansion``,
``knn_to_weighted_adj_matrix``, ``iterative_label_propagation``; their module globals kept on
an object, float32 labels in float64, no few-shot branch)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from online_streams import D, clip_base, hash_encoder, stream_views, streamed, toy_sources, unit
from wca.methods import build_head
from wca.methods.ecalp import ECALPHead

# their sparse tensors are built without invariant checks, some in CSR form
pytestmark = pytest.mark.filterwarnings("ignore:Sparse:UserWarning")


def edge_reweighting(X, Q, a, k, return_full=False, force_1=False):
    if (X.shape != Q.shape) and (not force_1):
        raise AssertionError("the few-shot weighting is not transcribed")
    weights = a.var(dim=0)
    weights = F.normalize(weights, p=2, dim=0)
    Q_weighted = Q * weights
    X_weighted = X
    Q_weighted = F.normalize(Q_weighted, p=2, dim=1)
    X_weighted = F.normalize(X_weighted, p=2, dim=1)
    weighted_similarity = Q_weighted @ X_weighted.t()
    if return_full:
        return weighted_similarity
    s, knn = weighted_similarity.topk(k, largest=True, dim=1)
    return knn, s


def knn_to_weighted_adj_matrix(knn, s, num_nodes):
    knn_indices = knn.flatten()
    distances = s.flatten()
    knn_indices[knn_indices == -1] = 0
    row_indices = torch.arange(num_nodes).repeat_interleave(knn.shape[1])
    nonzero_mask = distances != 0
    return torch.sparse_coo_tensor(
        torch.stack([row_indices[nonzero_mask], knn_indices[nonzero_mask]]),
        distances[nonzero_mask],
        (num_nodes, num_nodes),
    )


def sparse_slice(sparse_matrix, row_start, row_end):
    indices = sparse_matrix.indices()
    values = sparse_matrix.values()
    mask = (indices[0] >= row_start) & (indices[0] < row_end)
    new_indices = indices[:, mask]
    new_values = values[mask]
    new_indices[0] = new_indices[0] - row_start
    return torch.sparse_coo_tensor(
        new_indices, new_values, (row_end - row_start, sparse_matrix.size(1))
    )


class Globals:
    """The module globals of their ``iterative_label_propagation.py``."""

    sim_im2im = knn_im2im = sim_im2text = knn_im2text = None
    sim_im2im_store = knn_im2im_store = None
    Y_0 = Y_txt = None
    replaced = 0  # kNN entries that lost their place to a closer image (our count)


def dynamic_graph_expansion(g, features, clf, k_text, k_image):
    num_classes = clf.shape[0]
    num_features = features.shape[0]
    first_time = (g.sim_im2im is None) or (features.shape[0] == 2)
    k_im2im = min(k_image, features.shape[0])
    if first_time:
        sim_full = edge_reweighting(
            features, features, clf, k=k_im2im, return_full=True, force_1=True
        )
        g.sim_im2im, g.knn_im2im = sim_full[:num_features, :num_features].topk(
            k_im2im, largest=True, dim=1
        )
        g.sim_im2im_store = g.sim_im2im.clone()
        g.knn_im2im_store = g.knn_im2im.clone()
    else:
        sim_full_cr = edge_reweighting(
            features[-2:], features, clf, k=k_im2im, return_full=True, force_1=True
        ).t()
        sim_new, knn_new = sim_full_cr.topk(k_im2im, largest=True, dim=1)
        knn_new_idx = torch.full(
            (g.knn_im2im.shape[0] - 1, 1), num_features - 1, dtype=knn_new.dtype
        )
        last_mask = g.knn_im2im_store == num_features - 2
        g.sim_im2im_store[last_mask] = -1.0
        sim_extended = torch.cat(
            [g.sim_im2im_store[:-1], sim_full_cr[:, : num_features - 2].transpose(1, 0)], dim=1
        )
        knn_extended = torch.cat([g.knn_im2im_store[:-1], knn_new_idx - 1, knn_new_idx], dim=1)
        if sim_extended.shape[0] == k_im2im + 1:
            k_im_new = k_im2im + 1
        elif sim_extended.shape[0] > k_im2im:
            k_im_new = k_im2im + 2
        else:
            k_im_new = k_im2im
        gone = num_features - 2  # the old query copy's index
        before = {(r, n) for r, row in enumerate(g.knn_im2im[:-2].tolist()) for n in row}
        before = {(r, n) for r, n in before if n != gone}
        g.sim_im2im_store, ht = sim_extended.topk(k_im_new, largest=True, dim=1)
        g.sim_im2im = g.sim_im2im_store[:, :k_im2im]
        g.knn_im2im_store = knn_extended.gather(1, ht)
        g.knn_im2im = g.knn_im2im_store[:, :k_im2im]
        after = {(r, n) for r, row in enumerate(g.knn_im2im.tolist()) for n in row}
        g.replaced += len(before - after)
        if sim_extended.shape[0] > k_im2im:
            sim_new_more, knn_new_more = sim_full_cr.topk(k_im_new, largest=True, dim=1)
            g.sim_im2im_store = torch.cat([g.sim_im2im_store, sim_new_more], dim=0)
            g.knn_im2im_store = torch.cat([g.knn_im2im_store, knn_new_more], dim=0)
        else:
            g.sim_im2im_store = torch.cat([g.sim_im2im_store, sim_new], dim=0)
            g.knn_im2im_store = torch.cat([g.knn_im2im_store, knn_new], dim=0)
        g.sim_im2im = torch.cat([g.sim_im2im, sim_new], dim=0)
        g.knn_im2im = torch.cat([g.knn_im2im, knn_new], dim=0)
    k_im2text = min(k_text, num_classes)
    if first_time:
        sim_full_text = features.mm(clf.t())
        g.sim_im2text, g.knn_im2text = sim_full_text[:num_features].topk(
            k_im2text, largest=True, dim=1
        )
    else:
        sim_full_text_cr = features[-1].unsqueeze(0).mm(clf.t())
        sim_new, knn_new = sim_full_text_cr.topk(k_im2text, largest=True, dim=1)
        g.sim_im2text = torch.cat((g.sim_im2text[:-1], sim_new, sim_new), axis=0)
        g.knn_im2text = torch.cat((g.knn_im2text[:-1], knn_new, knn_new), axis=0)
    knn = torch.cat((g.knn_im2im + num_classes, g.knn_im2text), dim=1)
    sim = torch.cat((g.sim_im2im, g.sim_im2text), dim=1)
    knn_text = -1 * torch.ones((num_classes, knn.shape[1]), dtype=knn.dtype)
    sim_text = torch.zeros((num_classes, sim.shape[1]), dtype=sim.dtype)
    return torch.cat((knn_text, knn), axis=0), torch.cat((sim_text, sim), axis=0)


def iterative_label_propagation(
    g, image_features, text_features, k_text, k_image, gamma, alpha, max_iter=3
):
    if image_features.shape[0] == 2:
        g.Y_0 = None
        g.Y_txt = None
    num_class = text_features.shape[0]
    knn, sim = dynamic_graph_expansion(g, image_features, text_features, k_text, k_image)
    mask_knn = knn < num_class
    sim[mask_knn] = sim[mask_knn] ** gamma
    mask_im2im = knn >= num_class
    sim[mask_im2im] = sim[mask_im2im] ** gamma
    W = knn_to_weighted_adj_matrix(knn, sim, image_features.shape[0] + num_class)
    W = W.transpose(0, 1) + W
    W_sum = torch.sparse.sum(W, dim=1).to_dense()
    diag = 1 / (torch.sqrt(W_sum) + 1e-6)
    indices = torch.arange(W.size(0))
    D_rootsquare = torch.sparse_coo_tensor(
        torch.stack([indices, indices]), diag, (W.size(0), W.size(0))
    )
    W_tilde = torch.sparse.mm(D_rootsquare, torch.sparse.mm(W, D_rootsquare))
    if g.Y_txt is None or g.Y_txt.shape[0] != num_class:
        g.Y_txt = torch.eye(num_class, dtype=torch.float64).to_sparse()
        g.Y_0 = torch.zeros(
            (W_tilde.size(0) - num_class, num_class), dtype=torch.float64
        ).to_sparse()
        Y_hat = torch.cat((g.Y_txt, g.Y_0), dim=0)
    else:
        g.Y_0 = torch.cat(
            (g.Y_0[:-1], torch.zeros((2, num_class), dtype=torch.float64)), dim=0
        ).to_sparse()
        Y_hat = torch.cat((g.Y_txt, g.Y_0), dim=0)
    W_tilde_0 = sparse_slice(W_tilde.coalesce(), num_class, W_tilde.size(0))
    for _ in range(max_iter):
        Y_t = alpha * torch.sparse.mm(W_tilde_0, Y_hat) + (1 - alpha) * g.Y_0
        Y_hat = torch.cat((g.Y_txt, Y_t), dim=0)
    pred = Y_hat[-1, :num_class].to_dense()
    tensor = Y_hat.to_dense()[num_class:, :num_class]
    top3_values, top3_indices = torch.topk(tensor, 1, dim=1)
    g.Y_0 = torch.zeros_like(tensor)
    g.Y_0.scatter_(1, top3_indices, top3_values / 5)
    return pred * 10000


def ecalp_loop(images, text, k_text=3, k_image=8, gamma=10.0, alpha=1.0, iterations=3):
    """``main.py``'s zero-shot loop (``pred * 10000``, the logits before their softmax)."""
    g, outputs = Globals(), []
    for i in range(len(images)):
        image_features = torch.cat((images[: i + 1], images[i].unsqueeze(0)), dim=0)
        outputs.append(
            iterative_label_propagation(
                g, image_features, text, k_text, k_image, gamma, alpha, iterations
            )
        )
    return torch.stack(outputs), g


@pytest.mark.parametrize(
    "k_text,k_image,alpha,iterations", [(3, 8, 1.0, 3), (2, 3, 0.7, 2), (1, 2, 1.0, 4)]
)
def test_ecalp_equals_the_authors_loop(k_text, k_image, alpha, iterations):
    classes = 5
    images, text = stream_views(40, 1, classes, seed=31)[:, 0], unit(classes, D, seed=32)
    head = ECALPHead(clip_base(text, 100.0), k_text, k_image, 10, alpha, iterations)
    expected, graph = ecalp_loop(images, text, k_text, k_image, 10.0, alpha, iterations)
    assert graph.replaced > 10  # closer images pushed neighbours out of the kNN lists
    torch.testing.assert_close(head.logits(images), expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(streamed(head, images[:, None]), expected, atol=1e-6, rtol=0)
    assert (expected.argmax(1) != (images @ text.T).argmax(1)).any()  # propagation matters


def test_ecalp_the_same_stream_gives_the_same_outputs_and_a_fresh_one_forgets():
    images, text = stream_views(30, 1, 4, seed=33)[:, 0], unit(4, D, seed=34)
    head = ECALPHead(clip_base(text, 100.0))
    whole = head.logits(images)
    assert torch.equal(whole, head.logits(images))
    fresh = head.stream(20).logits(images[10:])
    assert (fresh - whole[10:]).abs().amax() > 1e-3


def test_ecalp_options_and_ecalp_on_wca():
    sources = toy_sources()
    head = build_head("ecalp", hash_encoder, sources)
    defaults = (head.k_text, head.k_image, head.gamma, head.alpha, head.iterations)
    assert defaults == (3, 8, 10, 1.0, 3)
    assert head.online and not head.uses_crops
    cases = [({"gamma": 2.5}, "gamma"), ({"k_image": 0}, "k_image"), ({"alpha": 2}, "alpha")]
    for options, message in cases:
        with pytest.raises(ValueError, match=message):
            build_head("ecalp", hash_encoder, sources, **options)
    ours = build_head("ecalp+wca", hash_encoder, sources)
    assert ours.uses_crops
    views = stream_views(30, 12, 4, seed=35).float()
    whole = ours.logits(views[:, 0], views[:, 1:])
    assert whole.shape == (30, 4) and torch.isfinite(whole).all()
    stream = ours.stream(30)
    chunks = [stream.logits(views[lo:hi, 0], views[lo:hi, 1:]) for lo, hi in [(0, 11), (11, 30)]]
    torch.testing.assert_close(torch.cat(chunks), whole, atol=1e-2, rtol=0)
