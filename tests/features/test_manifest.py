"""The manifest of a cache folder, validated by its schema: one that is damaged, of wrong types
or hand-edited is named in one warning and rebuilt from the shard files, losing nothing."""

from __future__ import annotations

import json
import warnings

import pytest

from fake_encoder import FakeEncoder
from feature_world import TinyDataset, copy_features, extract, same_features
from wca.features import MANIFEST
from wca.features.manifest import Manifest


def _cached(tmp_path):
    """A complete cache of 7 images in shards of 3, its features and its manifest."""
    features = copy_features(extract(FakeEncoder(), TinyDataset(), tmp_path))
    path = features.source / MANIFEST
    return features, path, json.loads(path.read_text())


def _rebuilt(tmp_path, features, path, before, warning: str) -> None:
    """The next run names the manifest and why in one warning, encodes nothing, and leaves a
    valid manifest with the entries it had."""
    encoder = FakeEncoder()
    with pytest.warns(UserWarning) as caught:
        same_features(extract(encoder, TinyDataset(), tmp_path), features)
    [message] = [str(w.message) for w in caught]
    assert message.startswith(f"{path}: ") and message.endswith(
        "; rebuilding it from the shard files"
    )
    assert warning in message, message
    assert encoder.views == 0
    after = Manifest.model_validate_json(path.read_text())
    assert after.model_dump(mode="json") == Manifest.model_validate(before).model_dump(mode="json")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        extract(FakeEncoder(), TinyDataset(), tmp_path)  # no second warning


@pytest.mark.parametrize(
    ("damage", "warning"),
    [
        (lambda m: [], "Input should be an object"),
        (lambda m: {**m, "shards": "x"}, "shards: Input should be an object"),
        (
            lambda m: {**m, "shards": {**m["shards"], "x": m["shards"]["0"]}},
            "shards.x.[key]: Input should be a valid integer",
        ),
        (lambda m: {**m, "shard_size": "three"}, "shard_size: Input should be a valid integer"),
        (lambda m: {**m, "shards": {"0": {**m["shards"]["0"], "sha256": 7}}}, "shards.0.sha256"),
    ],
    ids=["list", "shards-a-string", "shard-not-a-number", "shard-size-a-word", "sha256-a-number"],
)
def test_a_manifest_with_wrong_types_is_named_and_rebuilt_from_the_shards(
    tmp_path, damage, warning
):
    features, path, before = _cached(tmp_path)
    path.write_text(json.dumps(damage(before)))
    _rebuilt(tmp_path, features, path, before, warning)


def test_a_truncated_manifest_is_rebuilt_from_the_shards(tmp_path):
    features, path, before = _cached(tmp_path)
    path.write_text(path.read_text()[:100])
    _rebuilt(tmp_path, features, path, before, "Invalid JSON")


def test_a_hand_edited_shard_size_is_named_and_the_shards_layout_kept(tmp_path):
    features, path, before = _cached(tmp_path)
    path.write_text(json.dumps({**before, "shard_size": 5}))
    warning = "shard 1 holds images 3-5, not where shard_size 5 puts them"
    _rebuilt(tmp_path, features, path, before, warning)
    # with shard 0 alone in it, the manifest fits the edit: its shard file says otherwise
    path.write_text(json.dumps({**before, "shard_size": 5, "shards": {"0": before["shards"]["0"]}}))
    warning = "shard_size 5 does not match its shard files (3 images a shard)"
    _rebuilt(tmp_path, features, path, before, warning)


def test_a_rebuilt_manifest_leaves_out_a_damaged_shard(tmp_path):
    features, path, before = _cached(tmp_path)
    path.write_text("[]")
    shard = features.source / "shard-00001.safetensors"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    encoder = FakeEncoder()
    with pytest.warns(UserWarning, match="rebuilding it from the shard files"):
        same_features(extract(encoder, TinyDataset(), tmp_path), features)
    assert encoder.views == 3 * 6  # that shard alone
    assert Manifest.model_validate_json(path.read_text()).complete


def test_a_manifest_of_another_key_is_rebuilt_from_this_keys_shards(tmp_path):
    features, path, before = _cached(tmp_path)
    path.write_text(json.dumps({**before, "key": {**before["key"], "seed": 4}}))
    _rebuilt(tmp_path, features, path, before, "written for another cache key")


def test_a_record_of_wrong_types_is_ignored(tmp_path):
    import torch

    from wca.features import ShardCache
    from wca.features.cache import SHARD_TENSORS

    key = {"dataset": {"name": "mini", "split": None}}
    cache = ShardCache(tmp_path, key, num_images=4, shard_size=2)
    cache.write_shard(1, {name: torch.zeros(2, 1) for name in SHARD_TENSORS}, record=True)
    record = json.loads(cache.record_path(1).read_text())
    assert ShardCache(tmp_path, key, 4, 2).load(1) is not None
    cache.record_path(1).write_text(json.dumps({**record, "count": "two"}))
    assert ShardCache(tmp_path, key, 4, 2).load(1) is None  # as if missing: recomputed
