"""Encoder passes per image in the result file (wca.passes.ViewCounts): their summary on
constructed counts, what evaluate records for adaptive, fixed and full-view methods, and
files written before the record."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from fake_encoder import FakeEncoder
from wca.evaluate import evaluate, result_file
from wca.features import Features
from wca.methods import TextSources, build_head
from wca.passes import ViewCounts
from wca.results import read_result

B, N, D, C = 12, 8, 16, 3


def test_the_summary_of_constructed_passes():
    views = ViewCounts.of([11, 3, 5, 3, 2])
    assert views.mean == pytest.approx(4.8) and (views.min, views.max) == (2, 11)
    assert views.quantiles == {10: pytest.approx(2.4), 50: 3.0, 90: pytest.approx(8.6)}
    assert views.histogram == {2: 1, 3: 2, 5: 1, 11: 1} and views.n_images == 5
    assert list(views.per_image()) == [2, 3, 3, 5, 11]
    again = ViewCounts.model_validate_json(views.model_dump_json())  # JSON keys are text
    assert again == views


def test_a_fixed_budget_is_a_constant_and_files_pool_by_their_histograms():
    fixed = ViewCounts.constant(61, 4)
    assert (fixed.mean, fixed.min, fixed.max, fixed.histogram) == (61.0, 61, 61, {61: 4})
    assert set(fixed.quantiles.values()) == {61.0}
    first, second = ViewCounts.of([5, 7, 7]), ViewCounts.of([13, 5])
    assert ViewCounts.pooled([first, second]) == ViewCounts.of([5, 7, 7, 13, 5])


@pytest.mark.parametrize("passes", [[], [3, 0]])
def test_no_images_or_an_image_without_a_pass_is_refused(passes):
    with pytest.raises(ValueError, match="no images|must be >= 1"):
        ViewCounts.of(passes)


def test_a_histogram_read_with_zero_images_is_refused():
    with pytest.raises(ValidationError, match="passes and images must be >= 1"):
        ViewCounts(mean=2, min=2, max=2, quantiles={}, histogram={2: 0})


def _features() -> Features:
    generator = torch.Generator().manual_seed(0)
    centres = F.normalize(torch.randn(C, D, generator=generator), dim=-1)
    labels = torch.arange(B) % C
    noise = torch.randn(B, N, D, generator=generator)
    crops = F.normalize(centres[labels][:, None] + 0.9 * noise, dim=-1)
    image = F.normalize(centres[labels] + 0.9 * torch.randn(B, D, generator=generator), dim=-1)
    return Features(image, crops, torch.zeros(B, N, 4, dtype=torch.long), labels)


def _heads() -> dict:
    names = [f"thing {c}" for c in range(C)]
    sources = TextSources(
        names,
        sentences={name: [f"{name} with part {j}" for j in range(3)] for name in names},
        descriptors={name: [f"part {j}" for j in range(3)] for name in names},
    )
    encoder = FakeEncoder()
    return {name: build_head(name, encoder.encode_texts, sources) for name in ("clip", "wca")}


def test_evaluate_records_each_images_passes_for_crop_methods_only(tmp_path):
    features = _features()
    features.labels[5] = -1  # skipped as unreadable: its crops are not counted
    counts = torch.tensor([4, 8, 2, 2, 6, 1, 8, 3, 2, 5, 4, 2])
    evaluation = evaluate(features, _heads(), n_run=2, patch_n=6, counts=counts)
    written = result_file(evaluation, {}, dataset="d", model="m", pretrained="p")
    document = read_result(written.write(tmp_path / "r.json")).results
    read = np.delete(counts.numpy(), 5)
    assert document.methods["wca"].views == ViewCounts.of(1 + read)
    assert document.views_of("wca").mean == pytest.approx(1 + read.mean())
    assert document.views_of("wca").histogram == {3: 4, 4: 1, 5: 2, 6: 1, 7: 1, 9: 2}
    assert document.views_of("clip") == ViewCounts.constant(1, B - 1)  # the full view alone


def test_a_fixed_budget_records_one_plus_n_and_older_files_read_as_such(tmp_path):
    evaluation = evaluate(_features(), _heads(), n_run=2, patch_n=6)
    path = result_file(evaluation, {}, dataset="d", model="m", pretrained="p").write(
        tmp_path / "r.json"
    )
    results = read_result(path).results
    assert results.methods["wca"].views == ViewCounts.constant(7, B)
    document = json.loads(path.read_text())
    for method in document["results"]["methods"].values():
        del method["views"]  # a file written before the record
    path.write_text(json.dumps(document))
    older = read_result(path).results
    assert older.methods["wca"].views is None
    assert older.views_of("wca") == ViewCounts.constant(7, B)
    assert older.views_of("clip") == ViewCounts.constant(1, B)
