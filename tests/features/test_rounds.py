"""The rounds of adaptive extraction (wca.features.rounds): an image's crops and embeddings are
the first k of the fixed spec's, encoder batches stay full across rounds, stored embeddings
are not encoded again, and each image stops where the stopping head's rule says."""

from __future__ import annotations

import functools

import pytest
import torch
from tests.support.fake_encoder import FakeEncoder
from tests.support.feature_world import TinyDataset, extract

from wca import preprocessing
from wca.budget import BudgetSpec
from wca.crops import CropSpec
from wca.features.judge import StoppingHead
from wca.features.rounds import Source, read_in_rounds
from wca.features.views import encode_views
from wca.methods import build_head
from wca.methods.sources import TextSources

N = 12


class RowEncoder(FakeEncoder):
    """The fake encoder one view at a time: its numbers do not depend on the batch around a
    view (a CPU matmul's do, in the last bit), so equal views give equal bits."""

    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        rows = [super(RowEncoder, self).encode_images(view[None]) for view in pixels]
        self.calls -= len(rows) - 1
        return torch.cat(rows)


def wca_head(encoder, classes: int = 3):
    names = [f"class {c}" for c in range(classes)]
    sentences = {name: [f"{name} with part {j}" for j in range(2)] for name in names}
    return build_head("wca", encoder.encode_texts, TextSources(names, sentences=sentences))


def sources(dataset, spec: CropSpec, known=None):
    for index in range(len(dataset)):
        image, _ = dataset[index]
        boxes, flips = spec.views(image.height, image.width, index)
        stored = None if known is None else known.get(index)
        yield Source(index, preprocessing.image_to_tensor(image), boxes, flips, stored)


def read(encoder, dataset, budget, batch_size=8, known=None, head=None):
    spec = CropSpec(n_crops=N, alpha=0.5, seed=3)
    stopping = StoppingHead(head or wca_head(encoder), budget.stopping(N))

    def cut(pixels, boxes, flips, full):
        return preprocessing.uint8_views(pixels, boxes, encoder.preprocessing, flips, full=full)

    encode = functools.partial(encode_views, encoder)
    found = read_in_rounds(sources(dataset, spec, known), stopping, encode, batch_size, cut, 2)
    return dict(found)


@pytest.mark.parametrize("rule", ["margin", "patience"])
def test_adaptive_embeddings_are_the_first_k_of_the_fixed_ones_bit_for_bit(rule) -> None:
    dataset = TinyDataset(count=9)
    budget = BudgetSpec(crop_budget="adaptive", stop_rule=rule, margin_z=10.0, patience=5,
                        min_crops=2, crops_per_round=3)  # fmt: skip
    adaptive = read(RowEncoder(), dataset, budget)
    fixed = extract(RowEncoder(), dataset, None, n_crops=N, batch_size=5)
    assert sorted(adaptive) == list(range(len(dataset)))
    lengths = {len(emb) - 1 for emb in adaptive.values()}
    assert lengths <= {2, 5, 8, 11, 12}  # the rounds' crop counts
    assert len(lengths) > 1 or rule == "patience"  # images differ (under the margin rule)
    for index, emb in adaptive.items():
        k = len(emb) - 1
        assert torch.equal(emb[0], fixed.image_emb[index])
        assert torch.equal(emb[1:], fixed.crop_emb[index, :k])


def test_encoder_batches_stay_full_across_rounds() -> None:
    encoder = FakeEncoder()
    sizes: list[int] = []
    encode_images = encoder.encode_images
    encoder.encode_images = lambda pixels: (sizes.append(len(pixels)), encode_images(pixels))[1]
    budget = BudgetSpec(crop_budget="adaptive", margin_z=10.0, min_crops=2, crops_per_round=2)
    found = read(encoder, TinyDataset(count=30), budget, batch_size=8)
    assert len({len(emb) for emb in found.values()}) > 2
    views = sum(len(emb) for emb in found.values())
    assert sum(sizes) == views  # every view encoded once
    rounds = len(budget.stopping(N).rounds())
    assert all(size == 8 for size in sizes[:-rounds])  # short calls: only the tail's rounds
    assert len(sizes) <= -(-views // 8) + rounds


def test_known_embeddings_are_not_encoded_again() -> None:
    dataset = TinyDataset(count=6)
    tight = BudgetSpec(crop_budget="adaptive", margin_z=3.0, min_crops=2, crops_per_round=2)
    first = read(RowEncoder(), dataset, tight)
    encoder = RowEncoder()
    looser = tight.model_copy(update={"margin_z": 20.0})
    again = read(encoder, dataset, looser, known=first)
    fresh = read(RowEncoder(), dataset, looser)
    assert again.keys() == fresh.keys()
    for index, emb in fresh.items():
        assert torch.equal(again[index], emb)
    needed = sum(max(0, len(fresh[i]) - len(first[i])) for i in fresh)
    assert 0 < encoder.views == needed  # only the crops past each stored prefix


def test_without_an_encoder_images_past_their_known_crops_are_named() -> None:
    dataset = TinyDataset(count=5)
    budget = BudgetSpec(crop_budget="adaptive", margin_z=10.0, min_crops=2, crops_per_round=2)
    full = read(FakeEncoder(), dataset, budget)
    short = {i: emb[:3] for i, emb in full.items()}  # full view and 2 crops stored
    spec = CropSpec(n_crops=N, alpha=0.5, seed=3)
    stopping = StoppingHead(wca_head(FakeEncoder()), budget.stopping(N))
    judged = dict(read_in_rounds(sources(dataset, spec, short), stopping, None, 8, None))
    for index, emb in judged.items():
        if len(full[index]) == 3:
            assert torch.equal(emb, full[index])
        else:
            assert emb is None
    assert None in judged.values() and any(v is not None for v in judged.values())


def test_stopping_at_n_reads_every_crop() -> None:
    budget = BudgetSpec(crop_budget="adaptive", stop_rule="patience", patience=N)
    found = read(FakeEncoder(), TinyDataset(count=4), budget)
    assert {len(emb) for emb in found.values()} == {N + 1}
