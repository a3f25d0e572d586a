"""The multi-run protocol, subset scoring and the result writers."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F

from fake_encoder import FakeEncoder
from wca.evaluate import evaluate, result_file, run_indices, stream_order
from wca.features import Features
from wca.methods import Head, OnlineHead, TextSources, build_head
from wca.results import read_result

B, N, D, C = 23, 12, 16, 4


def _features(parts: int = 1) -> Features:
    generator = torch.Generator().manual_seed(0)
    centres = F.normalize(torch.randn(C, D, generator=generator), dim=-1)
    labels = torch.arange(B) % C
    crop = F.normalize(
        centres[labels][:, None] + 0.9 * torch.randn(B, N, D, generator=generator), dim=-1
    )
    image = F.normalize(centres[labels] + 0.9 * torch.randn(B, D, generator=generator), dim=-1)
    boxes = torch.zeros(B, N, 4, dtype=torch.long)
    crop_parts = list(crop.tensor_split(parts)) if parts > 1 else crop
    return Features(image, crop_parts, boxes, labels)


def _sources() -> TextSources:
    names = [f"thing {c}" for c in range(C)]
    sentences = {
        name: [f"{name} with part {j}" for j in range(3 + c)] for c, name in enumerate(names)
    }
    descriptors = {name: [f"part {j}" for j in range(3)] for name in names}
    return TextSources(
        names,
        sentences=sentences,
        descriptors=descriptors,
        templates=["a {}.", "the {}."],
        words=["alpha", "bravo", "charlie", "delta"],
    )


@dataclass
class ScriptedHead(Head):
    """Fixed logits, optionally different per draw; records the crops it was shown."""

    logits_by_draw: list[torch.Tensor]
    uses_crops: bool = False

    @property
    def n_draws(self) -> int:
        return len(self.logits_by_draw)

    def logits(self, image_emb, crop_emb=None, draw=0):
        rows = image_emb[:, 0].long()  # image_emb column 0 carries the image index
        return self.logits_by_draw[draw][rows]


def test_pool_protocol_matches_direct_scoring_of_each_run():
    features, encoder = _features(parts=3), FakeEncoder()
    heads = {m: build_head(m, encoder.encode_texts, _sources()) for m in ("clip", "cupl", "wca")}
    result = evaluate(features, heads, n_run=5, patch_n=7, seed=11, chunk_size=4)
    indices = run_indices(N, 5, 7, 11, "pool")
    crop_emb = features.crop_emb
    for run in range(5):
        logits = heads["wca"].logits(features.image_emb, crop_emb[:, indices[run]])
        expected = (logits.argmax(1) == features.labels).double().mean() * 100
        assert result.methods["wca"].top1[run] == pytest.approx(float(expected))
    clip = result.methods["clip"]
    assert len(set(clip.top1)) == 1 and clip.top1_mean_std[1] == 0
    wca = result.methods["wca"]
    assert all(t5 >= t1 for t5, t1 in zip(wca.top5, wca.top1, strict=True))
    assert list(result.methods) == ["clip", "cupl", "wca"]


def test_chunking_does_not_change_results():
    encoder = FakeEncoder()
    heads = {"wca": build_head("wca", encoder.encode_texts, _sources())}
    a = evaluate(_features(), heads, n_run=4, patch_n=5, chunk_size=1)
    b = evaluate(_features(parts=2), heads, n_run=4, patch_n=5, chunk_size=1000)
    assert a.methods["wca"].top1 == pytest.approx(b.methods["wca"].top1)
    assert a.methods["wca"].per_class_top1 == pytest.approx(b.methods["wca"].per_class_top1)


def test_waffle_draws_cycle_over_runs():
    encoder = FakeEncoder()
    heads = {"waffle": build_head("waffle", encoder.encode_texts, _sources(), draws=3)}
    runs = evaluate(_features(), heads, n_run=7, patch_n=5).methods["waffle"].top1
    assert runs[0] == runs[3] == runs[6] and runs[1] == runs[4]


def test_indices_are_shared_draws_with_replacement_or_fresh_slices():
    pool = run_indices(10, 20, 60, seed=0, protocol="pool")
    assert pool.shape == (20, 60) and int(pool.max()) < 10
    assert torch.equal(pool, run_indices(10, 20, 60, seed=0, protocol="pool"))
    assert not torch.equal(pool, run_indices(10, 20, 60, seed=1, protocol="pool"))
    fresh = run_indices(12, 3, 4, seed=0, protocol="fresh")
    assert sorted(fresh.flatten().tolist()) == list(range(12))
    with pytest.raises(ValueError, match="n_run \\* patch_n = 15"):
        run_indices(12, 3, 5, seed=0, protocol="fresh")
    with pytest.raises(ValueError, match="protocol: must be one of pool, fresh"):
        run_indices(12, 3, 5, seed=0, protocol="other")


def test_fresh_protocol_shows_each_run_its_own_crops():
    seen = []

    class Recorder(Head):
        uses_crops = True

        def logits(self, image_emb, crop_emb=None, draw=0):
            seen.append(crop_emb[0].clone())
            return torch.zeros(len(image_emb), C)

    features = _features()
    evaluate(features, {"r": Recorder()}, n_run=3, patch_n=4, protocol="fresh", chunk_size=B)
    for run, crops in enumerate(seen):
        assert torch.equal(crops, features.crop_emb[0, run * 4 : (run + 1) * 4])


def test_class_subset_takes_argmax_over_the_subset_only():
    labels = torch.tensor([1, 3, 3, 1])
    image = torch.arange(4.0)[:, None].repeat(1, D)
    features = Features(image, torch.zeros(4, 2, D), torch.zeros(4, 2, 4), labels)
    logits = torch.tensor(
        [[9.0, 5, 0, 1, 0], [9.0, 1, 0, 5, 0], [0.0, 5, 0, 1, 9], [9.0, 0, 0, 0, 0]]
    )
    head = ScriptedHead([logits])
    full = evaluate(features, {"m": head}, n_run=2, patch_n=1).methods["m"]
    subset = evaluate(features, {"m": head}, n_run=2, patch_n=1, class_subset=[1, 3]).methods["m"]
    assert full.top1 == [0.0, 0.0]
    assert subset.top1 == [75.0, 75.0]  # image 2 picks 1 over 3 within the subset
    assert subset.top5 == [100.0, 100.0]
    assert subset.per_class_top1 == [None, 100.0, None, 50.0, None]


def test_labels_beyond_the_logits_are_an_error():
    features = Features(
        torch.zeros(2, D), torch.zeros(2, 2, D), torch.zeros(2, 2, 4), torch.tensor([0, 7])
    )
    with pytest.raises(ValueError, match="scores 4 classes but labels go up to 7"):
        evaluate(features, {"m": ScriptedHead([torch.zeros(2, 4)])}, n_run=1, patch_n=1)


def test_table_and_json(tmp_path):
    encoder = FakeEncoder()
    heads = {
        m: build_head(m, encoder.encode_texts, _sources()) for m in ("clip-e", "clip-d", "wca")
    }
    result = evaluate(_features(), heads, n_run=3, patch_n=4)
    document = result_file(
        result, {"dataset": "tiny", "alpha": 0.5}, dataset="tiny", model="fake", pretrained=""
    )
    table = document.table("tiny")
    assert "| wca |" in table and "| clip-d |" in table and "±" in table
    path = document.write(tmp_path / "out" / "r.json")
    document = json.loads(path.read_text())
    wca = document["results"]["methods"]["wca"]
    assert len(wca["top1"]["runs"]) == 3 and wca["uses_crops"]
    assert wca["top1"]["mean"] == pytest.approx(sum(wca["top1"]["runs"]) / 3)
    assert document["config"]["dataset"] == "tiny" and document["config"]["alpha"] == 0.5
    assert document["versions"]["torch"] and "open_clip_torch" in document["versions"]
    assert len(wca["per_class_top1"]) == C
    assert document["schema_version"] == 3 and document["primary_method"] == "wca"
    read = read_result(path).results.methods["wca"]
    correct = read.correct_matrix(3, B)
    assert (correct.mean(1) * 100).tolist() == pytest.approx(wca["top1"]["runs"])


class PerRun(Head):
    """A crop head seen through ``logits`` only: evaluate gathers each run's crops for it."""

    uses_crops = True

    def __init__(self, head) -> None:
        self.head = head

    def logits(self, image_emb, crop_emb=None, draw=0):
        return self.head.logits(image_emb, crop_emb, draw)


class PoolSpy(PerRun):
    """The same head with its ``pool_logits``, recording the runs of every call."""

    pooled_runs = True

    def __init__(self, head) -> None:
        super().__init__(head)
        self.calls = []

    def pool_logits(self, image_emb, crop_pool, indices):
        self.calls.append(tuple(indices.shape))
        return self.head.pool_logits(image_emb, crop_pool, indices)


def test_heads_scoring_all_runs_from_the_pool_match_per_run_scoring(monkeypatch):
    encoder = FakeEncoder()
    head = build_head("wca", encoder.encode_texts, _sources())
    spy = PoolSpy(head)
    monkeypatch.setattr("wca.evaluate.RUN_LOGITS_BUDGET", 2 * 9 * C)  # runs in groups of 2
    a = evaluate(_features(), {"wca": PerRun(head)}, n_run=5, patch_n=7, seed=2, chunk_size=9)
    b = evaluate(_features(), {"wca": spy}, n_run=5, patch_n=7, seed=2, chunk_size=9)
    assert a.methods["wca"].top1 == pytest.approx(b.methods["wca"].top1)
    assert a.methods["wca"].top5 == pytest.approx(b.methods["wca"].top5)
    assert spy.calls[:3] == [(1, 7), (2, 7), (2, 7)]  # chunk 1: run 0, then runs 1-2 and 3-4


class StreamRecorder(OnlineHead):
    """An online head that remembers the order its images arrive in (their labels, from the
    embedding's first coordinate) and scores each image by the label of the one before it."""

    uses_crops = True

    def __init__(self) -> None:
        self.orders: list[list[int]] = []

    def stream(self, length=None):
        order: list[int] = []
        self.orders.append(order)

        class Stream:
            previous = 0

            def logits(self, image_emb, crop_emb=None):
                out = torch.zeros(len(image_emb), C)
                for row, image in enumerate(image_emb):
                    order.append(int(image[-1]))
                    out[row, self.previous] = 1.0  # a memory: the previous image's label
                    self.previous = int(image[-1]) % C
                return out

        return Stream()


def test_online_heads_stream_a_seeded_order_per_run_from_an_empty_memory():
    features = _features()
    features.image_emb[:, -1] = torch.arange(B, dtype=features.image_emb.dtype)  # image ids
    head = StreamRecorder()
    first = evaluate(features, {"s": head}, n_run=3, patch_n=2, seed=5, chunk_size=4)
    orders = list(head.orders)
    assert len(orders) == 3 and all(sorted(order) == list(range(B)) for order in orders)
    assert len({tuple(order) for order in orders}) == 3  # every run its own order
    again = evaluate(features, {"s": head}, n_run=3, patch_n=2, seed=5, chunk_size=7)
    assert head.orders[3:] == orders  # the same seed, the same streams, whatever the chunks
    assert again.methods["s"].top1 == first.methods["s"].top1
    evaluate(features, {"s": head}, n_run=1, patch_n=2, seed=6)
    assert head.orders[-1] != orders[0]  # another seed, another order
    assert first.methods["s"].online and first.to_schema().stream_order is not None


def test_ragged_features_score_each_image_on_its_own_crops():
    features = _features()
    features.labels[3] = -1  # skipped as unreadable: its count is not read
    counts = torch.tensor([1 + (5 * i) % N for i in range(B)])
    counts[3] = 0
    crops = features.crop_emb
    crops[torch.arange(N) >= counts[:, None]] = torch.nan  # padding: anything, even NaN
    encoder = FakeEncoder()
    heads = {
        name: build_head(name, encoder.encode_texts, _sources(), **options)
        for name, options in [("wca", {}), ("zero", {}), ("tda+wca", {"logit_scale": 20.0})]
    }
    result = evaluate(features, heads, n_run=2, patch_n=5, seed=1, chunk_size=7, counts=counts)
    rows = features.valid.nonzero().flatten().tolist()
    image, labels = features.image_emb, features.labels[rows]

    def own(head, order):  # each image alone on its own crops, in ``order`` (positions)
        stream = head.stream(len(rows)) if head.online else None
        score = stream.logits if head.online else head.logits
        return torch.cat(
            [score(image[[rows[p]]], crops[[rows[p]], : counts[rows[p]]]) for p in order]
        )

    for name in ("wca", "zero"):
        correct = (own(heads[name], range(len(rows))).argmax(1) == labels).numpy()
        assert (result.methods[name].correct == correct).all()  # every run: its own crops
    for run in range(2):
        order = stream_order(len(rows), 1, run)
        correct = (own(heads["tda+wca"], order.tolist()).argmax(1) == labels[order]).numpy()
        assert (result.methods["tda+wca"].correct[run, order.numpy()] == correct).all()
    with pytest.raises(ValueError, match=r"^counts: must be integers \[B\] = \[23\]"):
        evaluate(features, heads, n_run=1, patch_n=5, counts=counts[:-1])
