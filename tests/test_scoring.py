"""The scoring equations against explicit loops and their limits."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from wca.scoring import crop_weights, description_weights, mean_embedding, wca_scores


def unit(*shape: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g, dtype=torch.float64), dim=-1)


def ragged_problem(B=3, N=5, C=4, M=6, D=8):
    crops, image = unit(B, N, D, seed=1), unit(B, D, seed=2)
    desc, label = unit(C, M, D, seed=3), unit(C, D, seed=4)
    counts = [6, 1, 3, 5][:C]
    mask = torch.arange(M)[None, :] < torch.tensor(counts)[:, None]
    return crops, image, desc, label, mask, counts


def test_paper_form_equals_double_loop():
    crops, image, desc, label, mask, counts = ragged_problem()
    s_img, s_txt = 4.0, 2.0
    got = wca_scores(crops, image, desc, label, s_img, s_txt, mask, form="paper")
    B, N, C = crops.shape[0], crops.shape[1], desc.shape[0]
    expected = torch.zeros(B, C, dtype=torch.float64)
    for b in range(B):
        w = [math.exp(math.exp(s_img) * float(crops[b, i] @ image[b])) for i in range(N)]
        for c in range(C):
            v = [math.exp(math.exp(s_txt) * float(desc[c, j] @ label[c])) for j in range(counts[c])]
            total = 0.0
            for i in range(N):
                for j in range(counts[c]):
                    total += w[i] / sum(w) * v[j] / sum(v) * float(crops[b, i] @ desc[c, j])
            expected[b, c] = total
    torch.testing.assert_close(got, expected, atol=1e-10, rtol=0)


def test_reference_form_is_product_of_normalised_means_and_ranks_like_scaled_double_sum():
    crops, image, desc, label, mask, _ = ragged_problem()
    w = crop_weights(crops, image, 4.0)
    v = description_weights(desc, label, 2.0, mask)
    image_mean = (w[..., None] * crops).sum(1)
    text_mean = (v[..., None] * desc.masked_fill(~mask[..., None], 0)).sum(1)
    reference = wca_scores(crops, image, desc, label, 4.0, 2.0, mask, form="reference")
    expected = F.normalize(image_mean, dim=-1) @ F.normalize(text_mean, dim=-1).T
    torch.testing.assert_close(reference, expected, atol=1e-12, rtol=0)
    paper = wca_scores(crops, image, desc, label, 4.0, 2.0, mask, form="paper")
    per_class_norm = text_mean.norm(dim=-1)
    assert torch.equal((paper / per_class_norm).argsort(dim=1), reference.argsort(dim=1))


def test_padding_content_is_ignored():
    crops, image, desc, label, mask, _ = ragged_problem()
    polluted = desc.clone()
    polluted[~mask] = float("nan")
    for form in ("paper", "reference"):
        clean = wca_scores(crops, image, desc, label, 4.0, 2.0, mask, form=form)
        torch.testing.assert_close(
            wca_scores(crops, image, polluted, label, 4.0, 2.0, mask, form=form), clean
        )
    assert torch.all(description_weights(desc, label, 2.0, mask)[~mask] == 0)


def test_one_crop_and_one_description_give_plain_cosine():
    crops, image, desc, label = unit(2, 1, 8), unit(2, 8), unit(3, 1, 8), unit(3, 8)
    expected = crops[:, 0] @ desc[:, 0].T
    for form in ("paper", "reference"):
        torch.testing.assert_close(
            wca_scores(crops, image, desc, label, 4.0, 2.0, form=form), expected
        )


def test_tiny_scales_give_uniform_weights_and_plain_means():
    crops, image, desc, label, mask, _ = ragged_problem()
    tiny = -50.0  # exp(-50) ~ 2e-22: every weight uniform
    w = crop_weights(crops, image, tiny)
    torch.testing.assert_close(w, torch.full_like(w, 1 / crops.shape[1]))
    paper = wca_scores(crops, image, desc, label, tiny, tiny, mask, form="paper")
    expected = crops.mean(1) @ mean_embedding(desc, mask, normalize=False).T
    torch.testing.assert_close(paper, expected, atol=1e-12, rtol=0)


def test_huge_image_scale_selects_the_crop_most_like_the_full_view():
    crops, image = unit(4, 7, 16, seed=5), unit(4, 16, seed=6)
    w = crop_weights(crops, image, 12.0)  # exp(12) ~ 1.6e5
    best = torch.einsum("bnd,bd->bn", crops, image).argmax(1)
    assert torch.equal(w.argmax(1), best)
    assert torch.all(w.max(1).values > 0.999)
    assert torch.isfinite(w).all()


def test_class_without_descriptions_is_an_error():
    desc, label = unit(2, 3, 8), unit(2, 8)
    mask = torch.tensor([[True, True, False], [False, False, False]])
    with pytest.raises(ValueError, match=r"indices \[1\]"):
        description_weights(desc, label, 2.0, mask)


def test_unknown_form_is_an_error():
    crops, image, desc, label, mask, _ = ragged_problem()
    with pytest.raises(ValueError, match="form"):
        wca_scores(crops, image, desc, label, 4.0, 2.0, mask, form="sum")


def test_mean_embedding_masks_padding():
    emb = unit(2, 3, 4)
    mask = torch.tensor([[True, False, False], [True, True, True]])
    mean = mean_embedding(emb, mask, normalize=False)
    torch.testing.assert_close(mean[0], emb[0, 0])
    torch.testing.assert_close(mean[1], emb[1].mean(0))
    torch.testing.assert_close(
        mean_embedding(emb, mask).norm(dim=-1), torch.ones(2, dtype=emb.dtype)
    )


def test_never_materialises_the_four_way_tensor():
    """At B=256, N=60, C=1000, M=50, D=512 no intermediate is larger than the biggest input."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class LargestOutput(TorchDispatchMode):
        largest = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in out if isinstance(out, tuple | list) else [out]:
                if isinstance(t, torch.Tensor):
                    LargestOutput.largest = max(LargestOutput.largest, t.numel())
            return out

    B, N, C, M, D = 256, 60, 1000, 50, 512
    crops, image = torch.full((B, N, D), D**-0.5), torch.full((B, D), D**-0.5)
    desc, label = torch.full((C, M, D), D**-0.5), torch.full((C, D), D**-0.5)
    mask = torch.ones(C, M, dtype=torch.bool)
    biggest_input = max(crops.numel(), desc.numel())
    for form in ("paper", "reference"):
        with LargestOutput():
            wca_scores(crops, image, desc, label, 4.0, 2.0, mask, form=form)
        assert LargestOutput.largest <= biggest_input < B * N * C * M
