"""Images identified by content, as git identifies files: a stat that did not move is trusted,
a moved one costs a read of that file, a changed content recomputes its shard alone; names are
relative to the dataset's root, however it was typed and wherever the dataset lies."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings
from pathlib import Path

import pytest

import wca.features.identity as identity
from cli_world import build_world, extract_args
from fake_encoder import FakeEncoder
from feature_world import TinyDataset, copy_features, extract, same_features
from wca.cli import main
from wca.demo.world import DemoTestSet
from wca.features import MANIFEST
from wca.features.identity import ImageList, read_version
from wca.features.key import dataset_identity


def _bmp_folder(root: Path, size: tuple[int, int] = (120, 100)) -> list[Path]:
    """3 classes x 2 BMPs of 36 KB: raw pixels, no checksum, so an edit in the middle of a file
    leaves its first and last 16 KB as they were."""
    paths = []
    for c in range(3):
        for k in range(2):
            path = root / f"c{c}" / f"{k}.bmp"
            path.parent.mkdir(parents=True, exist_ok=True)
            TinyDataset(count=6)[2 * c + k][0].resize(size).save(path)
            paths.append(path)
    return paths


def _folder(root: Path):
    from wca.datasets.folder import imagefolder

    return imagefolder(root)


@pytest.fixture
def reads(monkeypatch) -> list[str]:
    """The files read and hashed from now on, by name; a file changed within RACY_SECONDS of
    its read is not trusted, so the tests' fresh files count as old."""
    read: list[str] = []
    real = identity.read_version

    def counted(path):
        read.append(Path(path).name)
        return real(path)

    monkeypatch.setattr(identity, "read_version", counted)
    monkeypatch.setattr(identity, "RACY_SECONDS", 0.0)
    return read


def test_an_edit_in_the_middle_with_size_and_mtime_restored_is_recomputed(tmp_path):
    root, cache = tmp_path / "images", tmp_path / "cache"
    paths = _bmp_folder(root)
    extract(FakeEncoder(), _folder(root), cache, shard_size=2)
    target = paths[2]  # c1/0.bmp, shard 1
    before = target.stat()
    with open(target, "r+b") as handle:  # in place, the middle of the pixels
        handle.seek(before.st_size // 2)
        handle.write(bytes(255 - b for b in handle.read(600)))
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))  # as `touch -r` does
    after = target.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)

    encoder = FakeEncoder()
    with pytest.warns(UserWarning, match=r"shard-00001.*differ .*: 1 of 2 in content \(c1/0.bmp\)"):
        cached = copy_features(extract(encoder, _folder(root), cache, shard_size=2))
    assert encoder.views == 2 * 6  # that shard alone
    same_features(cached, extract(FakeEncoder(), _folder(root), None, shard_size=2))
    encoder = FakeEncoder()
    extract(encoder, _folder(root), cache, shard_size=2)
    assert encoder.views == 0


def test_unchanged_stats_are_trusted_and_a_moved_one_costs_one_read(tmp_path, reads):
    root, cache = tmp_path / "images", tmp_path / "cache"
    paths = _bmp_folder(root)
    extract(FakeEncoder(), _folder(root), cache, shard_size=2)
    assert sorted(reads) == sorted(p.name for p in paths)  # each read once, as it was decoded
    reads.clear()
    encoder = FakeEncoder()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        extract(encoder, _folder(root), cache, shard_size=2)
    assert encoder.views == 0 and reads == []  # stat alone

    before = paths[3].stat()
    paths[3].chmod(0o600)  # ctime moves, content does not
    assert paths[3].stat().st_ctime_ns != before.st_ctime_ns
    touched = paths[4].stat()
    os.utime(paths[4], ns=(touched.st_atime_ns, touched.st_mtime_ns + 10**9))  # `touch`
    encoder = FakeEncoder()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        extract(encoder, _folder(root), cache, shard_size=2)
    assert encoder.views == 0 and sorted(reads) == ["0.bmp", "1.bmp"]  # c1/1 and c2/0
    reads.clear()
    extract(FakeEncoder(), _folder(root), cache, shard_size=2)
    assert reads == []  # their sidecars record the new stats


def test_a_file_changed_just_before_its_read_is_read_again_until_it_is_older(
    tmp_path, reads, monkeypatch
):
    root, cache = tmp_path / "images", tmp_path / "cache"
    _bmp_folder(root)
    monkeypatch.setattr(identity, "RACY_SECONDS", 10.0**9)  # every file is "just changed"
    extract(FakeEncoder(), _folder(root), cache, shard_size=2)
    for _ in range(2):
        reads.clear()
        encoder = FakeEncoder()
        extract(encoder, _folder(root), cache, shard_size=2)
        assert encoder.views == 0 and len(reads) == 6  # racily clean: hashed, not trusted
    monkeypatch.setattr(identity, "RACY_SECONDS", 0.0)  # they are older now
    extract(FakeEncoder(), _folder(root), cache, shard_size=2)
    reads.clear()
    extract(FakeEncoder(), _folder(root), cache, shard_size=2)
    assert reads == []


def test_a_moved_dataset_reads_nothing_and_a_copied_one_reads_once(tmp_path, reads):
    first, cache = tmp_path / "first", tmp_path / "cache"
    _bmp_folder(first)
    features = copy_features(extract(FakeEncoder(), _folder(first), cache, shard_size=2))
    moved = tmp_path / "moved"
    first.rename(moved)  # same file system: inodes and ctimes travel along
    reads.clear()
    encoder = FakeEncoder()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        same_features(extract(encoder, _folder(moved), cache, shard_size=2), features)
    assert encoder.views == 0 and reads == []
    copied = tmp_path / "copied"
    shutil.copytree(moved, copied)  # new inodes and ctimes
    encoder = FakeEncoder()
    same_features(extract(encoder, _folder(copied), cache, shard_size=2), features)
    assert encoder.views == 0 and len(reads) == 6
    folders = sorted(cache.glob("*/*"))
    assert len(folders) == 3  # one per root (the key holds it), the shards linked, not copied
    inodes = {p.name: p.stat().st_ino for p in folders[0].glob("*.safetensors")}
    assert all(
        {p.name: p.stat().st_ino for p in folder.glob("*.safetensors")} == inodes
        for folder in folders
    )


def test_other_images_at_another_root_are_encoded_without_a_warning(tmp_path):
    first, other, cache = tmp_path / "first", tmp_path / "other", tmp_path / "cache"
    _bmp_folder(first)
    _bmp_folder(other, size=(100, 120))  # same names and labels, other pixels
    extract(FakeEncoder(), _folder(first), cache, shard_size=2)
    encoder = FakeEncoder()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # linked from the first root's folder: no news
        features = copy_features(extract(encoder, _folder(other), cache, shard_size=2))
    assert encoder.views == 6 * 6
    same_features(features, extract(FakeEncoder(), _folder(other), None, shard_size=2))
    encoder = FakeEncoder()
    extract(encoder, _folder(first), cache, shard_size=2)
    assert encoder.views == 0  # the first root's shards are its own still


def test_names_are_relative_to_the_root_however_it_was_typed(tmp_path, monkeypatch):
    root = tmp_path / "data" / "images"
    _bmp_folder(root)
    monkeypatch.chdir(tmp_path / "data")
    typed = ["images", "./images/", str(root), "../data/images", str(root) + "/"]
    names = {tuple(map(ImageList.of(_folder(spelling)).name, range(6))) for spelling in typed}
    assert names == {("c0/0.bmp", "c0/1.bmp", "c1/0.bmp", "c1/1.bmp", "c2/0.bmp", "c2/1.bmp")}


@pytest.mark.slow
def test_extract_with_a_relative_root_then_eval_with_an_absolute_one_share_shards(
    tmp_path, monkeypatch, capsys
):
    world = build_world(tmp_path)
    cache = tmp_path / "cache"
    monkeypatch.chdir(tmp_path)
    relative = extract_args(world, cache)
    relative[relative.index("--data-root") + 1] = "images"
    assert main(relative) == 0
    folder = next(cache.glob("*/*"))
    written = {p.name: p.stat().st_ino for p in folder.glob("shard-*.safetensors")}
    capsys.readouterr()
    evaluation = ["eval", *extract_args(world, cache)[1:], "--methods", "clip", "--n-run", "1",
                  "--descriptions", str(world["texts"]),
                  "--output", str(tmp_path / "r.json")]  # fmt: skip
    assert main(evaluation) == 0
    err = capsys.readouterr().err
    assert "differ" not in err and "recomputing" not in err, err
    assert {p.name: p.stat().st_ino for p in folder.glob("shard-*.safetensors")} == written
    assert len(list(cache.glob("*/*"))) == 1


def test_an_unreadable_image_skipped_then_fixed_recomputes_its_shard(tmp_path):
    root, cache = tmp_path / "images", tmp_path / "cache"
    paths = _bmp_folder(root)
    good = paths[5].read_bytes()
    paths[5].write_bytes(b"not an image")
    skipped = []
    skip = skipped.append
    extract(FakeEncoder(), _folder(root), cache, shard_size=2, on_bad_image=lambda i, _: skip(i))
    assert skipped == [5]
    encoder = FakeEncoder()
    extract(encoder, _folder(root), cache, shard_size=2, on_bad_image=lambda i, e: None)
    assert encoder.views == 0  # the same unreadable file: the shard as it was
    paths[5].write_bytes(good)
    encoder = FakeEncoder()
    with pytest.warns(UserWarning, match=r"shard-00002.*1 of 2 in content \(c2/1.bmp\)"):
        extract(encoder, _folder(root), cache, shard_size=2)
    assert encoder.views == 2 * 6


def test_shards_of_an_older_wca_are_recomputed_once(tmp_path):
    root, cache = tmp_path / "images", tmp_path / "cache"
    _bmp_folder(root)
    first = copy_features(extract(FakeEncoder(), _folder(root), cache, shard_size=2))
    manifest_path = next(cache.glob(f"*/*/{MANIFEST}"))
    manifest = json.loads(manifest_path.read_text())
    for entry in manifest["shards"].values():  # as wca 0.3 wrote them: other identities
        entry["identity"] = "path label size mtime_ns sha256(first and last 16 KB)"
    manifest_path.write_text(json.dumps(manifest))

    encoder = FakeEncoder()
    with pytest.warns(UserWarning, match="older wca.*recomputing its shards once") as caught:
        same_features(extract(encoder, _folder(root), cache, shard_size=2), first)
    assert encoder.views == 6 * 6 and len(caught) == 1  # one warning, not one per shard
    encoder = FakeEncoder()
    extract(encoder, _folder(root), cache, shard_size=2)
    assert encoder.views == 0


def test_a_file_version_is_its_content_and_the_stat_before_the_read(tmp_path, monkeypatch):
    path = tmp_path / "a.bin"
    path.write_bytes(b"x" * 1000)
    version = read_version(path)
    assert version.sha256 == hashlib.sha256(b"x" * 1000).hexdigest()
    info = path.stat()
    assert (version.size, version.mtime_ns, version.ctime_ns, version.ino) == (
        1000, info.st_mtime_ns, info.st_ctime_ns, info.st_ino
    )
    assert version.racy and not version.unchanged(info)  # just written: not to be trusted
    monkeypatch.setattr(identity, "RACY_SECONDS", 0.0)
    assert read_version(path).unchanged(info)


def test_loader_workers_hash_the_files_they_decode(tmp_path):
    root = tmp_path / "images"
    _bmp_folder(root)
    digests = []
    for workers in (0, 1):
        cache = tmp_path / f"cache{workers}"
        extract(FakeEncoder(), _folder(root), cache, shard_size=2, num_workers=workers)
        manifest = json.loads(next(cache.glob(f"*/*/{MANIFEST}")).read_text())
        digests.append({k: e["images_sha256"] for k, e in manifest["shards"].items()})
        sidecar = json.loads(next(cache.glob("*/*/shard-00002.images.json")).read_text())
        assert [row[:3] for row in sidecar["images"]] == [
            [name, 2, read_version(root / name).sha256] for name in ("c2/0.bmp", "c2/1.bmp")
        ]
    assert digests[0] == digests[1] and len(digests[0]) == 3



def test_generated_test_sets_of_other_seeds_never_share_features():
    """The demo's test set lists no files: it declares what renders each image."""
    one, same, other = (DemoTestSet(per_class=1, seed=seed) for seed in (1, 1, 2))
    assert (len(one), one.name) == (len(other), other.name)
    assert dataset_identity(one) == dataset_identity(same)
    assert dataset_identity(one)["images"] != dataset_identity(other)["images"]
    assert "images" not in dataset_identity(TinyDataset())  # declares none: name and length
