"""Loaders read miniature copies of each official layout: counts, labels, class names, errors."""

from __future__ import annotations

import json

import pytest
from PIL import Image

import mini_datasets as mini
from wca.datasets import DATASETS, ENV_VAR, Dataset, load_dataset, resolve_descriptions_dir
from wca.datasets.imagenet import imagenet_wnids
from wca.descriptions import load_classnames, load_descriptions

EXPECTED_NAMES = {
    "imagefolder",
    "imagenet",
    "imagenetv2",
    "imagenet-r",
    "imagenet-sketch",
    "imagenet-a",
    "cub",
    "dtd",
    "food101",
    "oxford_pets",
    "places365",
    "eurosat",
    "wds",
    *("cifar10", "cifar100", "stl10", "mnist", "fgvc_aircraft", "cars", "flowers", "renderedsst2"),
}


@pytest.fixture(autouse=True)
def no_env_descriptions(monkeypatch, tmp_path):
    """Tests choose the descriptions directory explicitly; the default points nowhere."""
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.delenv("WCA_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "no-cache"))


# ---------------------------------------------------------------- registry and load_dataset


def test_registry_names():
    assert set(DATASETS) == EXPECTED_NAMES


def test_unknown_dataset_lists_known_names(tmp_path):
    with pytest.raises(ValueError, match=r"unknown dataset 'caltech256' \(known: cub, dtd"):
        load_dataset("caltech256", tmp_path)


def test_unknown_option_lists_options(tmp_path):
    with pytest.raises(ValueError, match=r"no option partitions \(its options: partition"):
        load_dataset("dtd", tmp_path, partitions=2)


def test_unknown_split_lists_splits(tmp_path):
    with pytest.raises(ValueError, match=r"unknown split 'val' \(choose from test, train, all\)"):
        load_dataset("cub", tmp_path, split="val")


@pytest.mark.parametrize("name", sorted(EXPECTED_NAMES))
def test_missing_root_names_the_path(name, tmp_path, tiny_descriptions):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match=f"{missing}: data root does not exist"):
        load_dataset(name, missing, descriptions_dir=tiny_descriptions)


@pytest.mark.parametrize("name", sorted(EXPECTED_NAMES))
def test_wrong_layout_names_path_and_layout(name, tmp_path, tiny_descriptions):
    mini.write_image(tmp_path / "stray.jpg")
    with pytest.raises(FileNotFoundError, match=f"{tmp_path}: not the expected layout: <root>"):
        load_dataset(name, tmp_path, descriptions_dir=tiny_descriptions)


# ------------------------------------------------------------------------------ imagefolder


def test_imagefolder_labels_names_and_items(tmp_path):
    root = mini.make_imagefolder(tmp_path / "pets", {"tabby_cat": 2, "dog": 3, "Zebra": 1})
    mini.write_image(root / "dog" / "grey.png", mode="L")
    (root / "dog" / "notes.txt").write_text("not an image")
    dataset = load_dataset("imagefolder", root)
    assert dataset.classnames == ["Zebra", "dog", "tabby cat"]  # sorted folder names
    assert len(dataset) == 7
    assert dataset.labels == [0, 1, 1, 1, 1, 2, 2]
    assert dataset.split == "all" and dataset.class_subset is None
    image, label = dataset[1]
    assert isinstance(image, Image.Image) and image.mode == "RGB" and label == 1
    image, label = dataset[dataset.paths.index(root / "dog" / "grey.png")]
    assert image.mode == "RGB" and image.size == (6, 5) and label == 1


def test_imagefolder_split_and_names_files(tmp_path):
    mini.make_imagefolder(tmp_path / "test", {"a": 1, "b": 2})
    (tmp_path / "names.json").write_text(json.dumps([["first_class", "alias"], "second"]))
    (tmp_path / "names.txt").write_text("apple\n\nbanana split\n")
    from_json = load_dataset(
        "imagefolder", tmp_path, "test", classnames_file=tmp_path / "names.json"
    )
    assert from_json.classnames == ["first class", "second"] and from_json.split == "test"
    from_text = load_dataset(
        "imagefolder", tmp_path, "test", classnames_file=tmp_path / "names.txt"
    )
    assert from_text.classnames == ["apple", "banana split"] and from_text.labels == [0, 1, 1]
    (tmp_path / "three.txt").write_text("x\ny\nz\n")
    with pytest.raises(ValueError, match=r"three.txt: 3 class names for 2 class folders"):
        load_dataset("imagefolder", tmp_path, "test", classnames_file=tmp_path / "three.txt")


def test_imagefolder_empty_class_folder_is_named(tmp_path, caplog):
    """A folder without images is not a class (a run's results/ beside the classes);
    it is named in one line."""
    mini.make_imagefolder(tmp_path, {"full": 1})
    (tmp_path / "empty").mkdir()
    with caplog.at_level("INFO", logger="wca"):
        assert load_dataset("imagefolder", tmp_path).classnames == ["full"]
    assert f"{tmp_path}: folders without images are not classes: empty" in caplog.text


def test_imagefolder_checks_names_against_descriptions(tmp_path, descriptors_dir):
    dtd_names = mini.names(descriptors_dir, "dtd")
    mini.make_imagefolder(tmp_path, {name.replace("-", "_"): 1 for name in dtd_names})
    dataset = load_dataset(
        "imagefolder", tmp_path, descriptions_name="dtd", descriptions_dir=descriptors_dir
    )
    assert dataset.classnames == dtd_names and dataset.descriptions_name == "dtd"
    (tmp_path / "zigzagged").rename(tmp_path / "zz_zigzag")
    with pytest.raises(ValueError, match=r"label 46: 'zz_zigzag' vs 'zigzagged'"):
        load_dataset(
            "imagefolder", tmp_path, descriptions_name="dtd", descriptions_dir=descriptors_dir
        )


# --------------------------------------------------------------------------------- ImageNet


def test_imagenet_labels_are_imagenet_indices(tmp_path, descriptors_dir):
    mini.make_imagenet(tmp_path, {0: 2, 417: 1, 999: 2})
    dataset = load_dataset("imagenet", tmp_path, descriptions_dir=descriptors_dir)  # parent of val/
    assert dataset.root == tmp_path / "val" and dataset.split == "val"
    assert sorted(dataset.labels) == [0, 0, 417, 999, 999]
    assert all(
        path.parent.name == imagenet_wnids()[label]
        for path, label in zip(dataset.paths, dataset.labels, strict=True)
    )
    assert dataset.classnames == load_classnames(descriptors_dir / "imagenet" / "classnames.json")
    assert dataset.classnames[0] == "tench" and len(dataset.classnames) == 1000
    assert dataset.descriptions_name == "imagenet" and dataset.class_subset is None
    assert load_dataset("imagenet", tmp_path / "val", descriptions_dir=descriptors_dir).paths == (
        dataset.paths
    )


def test_imagenet_wnid_list_is_the_sorted_imagenet_order():
    wnids = imagenet_wnids()
    assert len(wnids) == 1000 and list(wnids) == sorted(wnids)
    assert wnids[0] == "n01440764" and wnids[999] == "n15075141"


def test_imagenet_rejects_unknown_wnid_and_flat_folder(tmp_path, descriptors_dir):
    mini.make_imagenet(tmp_path, {3: 1})
    mini.write_image(tmp_path / "val" / "n99999999" / "x.JPEG")
    with pytest.raises(ValueError, match=r"folders \['n99999999'\] are not ImageNet-1k wnids"):
        load_dataset("imagenet", tmp_path, descriptions_dir=descriptors_dir)
    flat = tmp_path / "flat"
    mini.write_image(flat / "ILSVRC2012_val_00000001.JPEG")
    with pytest.raises(
        FileNotFoundError, match=r"flat: not the expected layout: <root>/val/<wnid>"
    ):
        load_dataset("imagenet", flat, descriptions_dir=descriptors_dir)


def test_imagenet_needs_class_names(tmp_path):
    mini.make_imagenet(tmp_path, {3: 1})
    with pytest.raises(FileNotFoundError, match=r"imagenet/classnames.json: no class-name file"):
        load_dataset("imagenet", tmp_path)


def test_imagenetv2_folders_sort_numerically(tmp_path, descriptors_dir):
    folder = mini.make_imagenetv2(tmp_path, {0: 1, 2: 2, 10: 1, 999: 1})
    dataset = load_dataset("imagenetv2", tmp_path, descriptions_dir=descriptors_dir)
    assert dataset.root == folder and dataset.split == "matched-frequency"
    assert [int(path.parent.name) for path in dataset.paths] == dataset.labels
    assert sorted(dataset.labels) == [0, 2, 2, 10, 999]
    assert dataset.descriptions_name == "imagenetv2" and len(dataset.classnames) == 1000
    mini.write_image(folder / "1000" / "x.jpeg")
    with pytest.raises(ValueError, match=r"folders \['1000'\] are not ImageNet indices"):
        load_dataset("imagenetv2", folder, descriptions_dir=descriptors_dir)


def test_imagenet_sketch(tmp_path, descriptors_dir):
    mini.make_imagenet(tmp_path, {5: 1, 6: 1}, folder="sketch")
    dataset = load_dataset("imagenet-sketch", tmp_path, descriptions_dir=descriptors_dir)
    assert sorted(dataset.labels) == [5, 6] and dataset.descriptions_name == "imagenet-s"
    assert dataset.class_subset is None and len(dataset.classnames) == 1000


@pytest.mark.parametrize("name", ["imagenet-r", "imagenet-a"])
def test_imagenet_r_and_a_carry_their_200_class_subset(name, tmp_path, descriptors_dir):
    subset = json.loads((descriptors_dir / name / "imagenet-indices.json").read_text())
    chosen = {subset[0]: 1, subset[57]: 2, subset[-1]: 1}
    mini.make_imagenet(tmp_path, chosen, folder=name)
    dataset = load_dataset(name, tmp_path, descriptions_dir=descriptors_dir)
    assert dataset.class_subset == subset and len(subset) == 200
    assert sorted(dataset.labels) == sorted(label for label, n in chosen.items() for _ in range(n))
    assert len(dataset.classnames) == 1000 and dataset.descriptions_name == name
    outside = next(i for i in range(1000) if i not in subset)
    mini.make_imagenet(tmp_path, {outside: 1}, folder=name)
    with pytest.raises(ValueError, match=rf"labels \[{outside}\] are not in the class subset"):
        load_dataset(name, tmp_path, descriptions_dir=descriptors_dir)


@pytest.mark.parametrize("name", ["imagenet-r", "imagenet-a"])
def test_class_subset_without_index_file_uses_published_wnids(name, tmp_path, descriptors_dir):
    """A descriptions directory without imagenet-indices.json: the same 200 classes."""
    own = tmp_path / "descriptions" / name
    own.mkdir(parents=True)
    (own / "classnames.json").symlink_to(descriptors_dir / name / "classnames.json")
    subset = json.loads((descriptors_dir / name / "imagenet-indices.json").read_text())
    mini.make_imagenet(tmp_path / "data", {subset[3]: 1}, folder=name)
    dataset = load_dataset(name, tmp_path / "data", descriptions_dir=tmp_path / "descriptions")
    assert dataset.class_subset == subset


def test_bad_index_file_is_named(tmp_path, descriptors_dir):
    own = tmp_path / "descriptions" / "imagenet-r"
    own.mkdir(parents=True)
    (own / "classnames.json").symlink_to(descriptors_dir / "imagenet-r" / "classnames.json")
    (own / "imagenet-indices.json").write_text("[1, 2, 1000]")
    mini.make_imagenet(tmp_path / "data", {1: 1}, folder="imagenet-r")
    with pytest.raises(ValueError, match=r"imagenet-indices.json: expected a list of ImageNet"):
        load_dataset("imagenet-r", tmp_path / "data", descriptions_dir=tmp_path / "descriptions")


# ---------------------------------------------------------------------------------------- CUB


def test_cub_test_split_labels_and_names(tmp_path, descriptors_dir):
    images = [(0, 0), (0, 1), (1, 0), (199, 0), (199, 1), (57, 1)]
    folder = mini.make_cub(tmp_path, descriptors_dir, images)
    test = load_dataset("cub", tmp_path, descriptions_dir=descriptors_dir)
    assert test.root == folder and test.split == "test"
    assert test.labels == [0, 1, 199] and len(test) == 3
    assert test.paths[2] == folder / "images" / "200.Common_Yellowthroat" / (
        "Common_Yellowthroat_0004_199.jpg"
    )
    assert test.classnames == mini.names(descriptors_dir, "cub")
    assert test.classnames[0] == "Black-footed Albatross"
    train = load_dataset("cub", folder, "train", descriptions_dir=descriptors_dir)
    assert train.labels == [0, 199, 57]
    assert len(load_dataset("cub", folder, "all", descriptions_dir=descriptors_dir)) == 6


def test_cub_names_from_classes_txt_without_descriptions(tmp_path, descriptors_dir):
    mini.make_cub(tmp_path, descriptors_dir, [(0, 0)])
    dataset = load_dataset("cub", tmp_path)
    assert dataset.classnames[0] == "Black footed Albatross" and len(dataset.classnames) == 200


def test_cub_name_mismatch_is_listed(tmp_path, descriptors_dir):
    mini.make_cub(tmp_path, descriptors_dir, [(0, 0)], rename={3: "Grooved_Ani"})
    with pytest.raises(
        ValueError,
        match=r"classes.txt: class names disagree .* label 3: 'Grooved_Ani' vs "
        r"'Groove-billed Ani'",
    ):
        load_dataset("cub", tmp_path, descriptions_dir=descriptors_dir)


def test_cub_missing_label_is_named(tmp_path, descriptors_dir):
    folder = mini.make_cub(tmp_path, descriptors_dir, [(0, 0), (1, 0)])
    mini.write_lines(folder / "image_class_labels.txt", ["1 1"])
    with pytest.raises(ValueError, match=r"image_class_labels.txt: no entry for image 2"):
        load_dataset("cub", tmp_path, descriptions_dir=descriptors_dir)


# ---------------------------------------------------------------------------------------- DTD


def test_dtd_partition_and_names(tmp_path, descriptors_dir):
    mini.make_dtd(
        tmp_path,
        descriptors_dir,
        {
            "test1": ["banded/banded_0002.jpg", "zigzagged/zigzagged_0003.jpg"],
            "test2": ["polka-dotted/polka-dotted_0121.jpg"],
            "train1": ["blotchy/blotchy_0001.jpg"],
        },
    )
    test1 = load_dataset("dtd", tmp_path, descriptions_dir=descriptors_dir)
    assert test1.labels == [0, 46] and test1.split == "test1"
    assert test1.classnames == mini.names(descriptors_dir, "dtd")
    test2 = load_dataset("dtd", tmp_path / "dtd", partition=2, descriptions_dir=descriptors_dir)
    assert test2.labels == [30] and test2.classnames[30] == "polka-dotted"
    assert load_dataset("dtd", tmp_path, "train", descriptions_dir=descriptors_dir).labels == [1]
    with pytest.raises(ValueError, match=r"partition must be an integer 1..10, got 11"):
        load_dataset("dtd", tmp_path, partition=11)
    with pytest.raises(FileNotFoundError, match=r"labels/val1.txt: no such file"):
        load_dataset("dtd", tmp_path, "val", descriptions_dir=descriptors_dir)


# ----------------------------------------------------------------------------------- Food-101


def test_food101_test_split(tmp_path, descriptors_dir):
    mini.make_food101(
        tmp_path,
        descriptors_dir,
        {
            "test": ["apple_pie/1011328", "waffles/38612", "waffles/3961"],
            "train": ["baklava/1006121"],
        },
    )
    test = load_dataset("food101", tmp_path, descriptions_dir=descriptors_dir)
    assert test.labels == [0, 100, 100] and test.split == "test"
    assert test.paths[0] == tmp_path / "food-101" / "images" / "apple_pie" / "1011328.jpg"
    assert test.classnames == mini.names(descriptors_dir, "food101")
    assert test.classnames[0] == "apple pie"
    train = load_dataset(
        "food101", tmp_path / "food-101", "train", descriptions_dir=descriptors_dir
    )
    assert train.labels == [2]


def test_food101_bad_line_is_named(tmp_path, descriptors_dir):
    folder = mini.make_food101(tmp_path, descriptors_dir, {"test": ["apple_pie/1"]})
    mini.write_lines(folder / "meta" / "test.txt", ["apple_pie/1", "not_a_food/2"])
    with pytest.raises(ValueError, match=r"test.txt: line 2 'not_a_food/2' is not <class>/"):
        load_dataset("food101", tmp_path, descriptions_dir=descriptors_dir)


# ------------------------------------------------------------------------------- Oxford Pets


def test_oxford_pets_test_split(tmp_path, descriptors_dir):
    folder = mini.make_pets(tmp_path, descriptors_dir, {"test": [0, 1, 36, 1], "trainval": [5]})
    test = load_dataset("oxford-pets", tmp_path, descriptions_dir=descriptors_dir)  # - or _
    assert test.name == "oxford_pets" and test.descriptions_name == "oxford_pet"
    assert test.labels == [0, 1, 36, 1] and test.split == "test"
    assert test.paths[1] == folder / "images" / "american_bulldog_101.jpg"
    assert test.classnames == mini.names(descriptors_dir, "oxford_pet")
    trainval = load_dataset("oxford_pets", folder, "trainval", descriptions_dir=descriptors_dir)
    assert trainval.labels == [5]


def test_oxford_pets_name_mismatch(tmp_path, descriptors_dir):
    folder = mini.make_pets(tmp_path, descriptors_dir, {"test": [0]})
    mini.write_image(folder / "images" / "Persian_cat_1.jpg")
    mini.write_lines(folder / "annotations" / "trainval.txt", ["Persian_cat_1 24 1 1"])
    with pytest.raises(ValueError, match=r"label 23: 'Persian_cat' vs 'Persian'"):
        load_dataset("oxford_pets", tmp_path, descriptions_dir=descriptors_dir)


# --------------------------------------------------------------------------------- Places365


def test_places365_val(tmp_path, descriptors_dir):
    mini.make_places365(tmp_path, descriptors_dir, [0, 8, 364, 8])
    dataset = load_dataset("places365", tmp_path, descriptions_dir=descriptors_dir)
    assert dataset.labels == [0, 8, 364, 8] and dataset.split == "val"
    assert dataset.paths[0] == tmp_path / "val_large" / "Places365_val_00000001.jpg"
    reference = mini.names(descriptors_dir, "place365")
    assert dataset.classnames == reference and len(dataset.classnames) == 365
    assert len(set(dataset.classnames)) == 344  # sub-categories share a name, as the authors'
    with pytest.raises(FileNotFoundError, match=r"expected layout: .*<root>/val_256/<image>"):
        load_dataset("places365", tmp_path, small=True, descriptions_dir=descriptors_dir)


def test_places365_small_images(tmp_path, descriptors_dir):
    mini.make_places365(tmp_path, descriptors_dir, [3], images="val_256")
    dataset = load_dataset("places365", tmp_path, small=True, descriptions_dir=descriptors_dir)
    assert dataset.paths == [tmp_path / "val_256" / "Places365_val_00000001.jpg"]


def test_places365_bad_label_is_named(tmp_path, descriptors_dir):
    mini.make_places365(tmp_path, descriptors_dir, [0])
    mini.write_lines(tmp_path / "places365_val.txt", ["Places365_val_00000001.jpg x"])
    with pytest.raises(ValueError, match=r"places365_val.txt: line 1: label 'x' is not an int"):
        load_dataset("places365", tmp_path, descriptions_dir=descriptors_dir)


# ----------------------------------------------------------------------------------- EuroSAT


def test_eurosat_all_and_coop_split(tmp_path, tiny_descriptions):
    folder = mini.make_eurosat(tmp_path, per_class=2)
    everything = load_dataset("eurosat", tmp_path, descriptions_dir=tiny_descriptions)
    assert len(everything) == 20 and everything.split == "all"
    assert everything.labels == [label for label in range(10) for _ in range(2)]
    assert everything.classnames[0] == "annual crop land"
    assert everything.classnames[9] == "lake or sea"
    mini.write_coop_split(
        tmp_path / "split_zhou_EuroSAT.json",
        {"test": ["SeaLake/SeaLake_2.jpg", "Forest/Forest_1.jpg"], "train": []},
    )
    test = load_dataset("eurosat", tmp_path, "test", descriptions_dir=tiny_descriptions)
    assert test.labels == [9, 1] and test.paths[0] == folder / "SeaLake" / "SeaLake_2.jpg"
    with pytest.raises(ValueError, match=r"no 'val' list"):
        load_dataset("eurosat", tmp_path, "val")


def test_eurosat_test_split_needs_the_split_file(tmp_path):
    mini.make_eurosat(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"split_zhou_EuroSAT.json: no such file"):
        load_dataset("eurosat", tmp_path, "test")


def test_eurosat_names_follow_the_description_files(descriptors_dir, tmp_path):
    """The hand-written EuroSAT names are, in label order, the keys of the authors' files."""
    dataset = load_dataset("eurosat", mini.make_eurosat(tmp_path))
    assert dataset.classnames == list(
        load_descriptions(descriptors_dir / "eurosat" / "clip-d.json")
    )
    assert set(dataset.classnames) == set(
        load_descriptions(descriptors_dir / "eurosat" / "cupl.json")
    )


# ---------------------------------------------------------------------- descriptions directory


def test_descriptions_dir_from_environment(tmp_path, descriptors_dir, monkeypatch):
    mini.make_imagenet(tmp_path, {1: 1})
    monkeypatch.setenv(ENV_VAR, str(descriptors_dir))
    assert resolve_descriptions_dir() == (descriptors_dir, True)
    assert len(load_dataset("imagenet", tmp_path).classnames) == 1000
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match=f"{ENV_VAR}\\) does not exist"):
        load_dataset("imagenet", tmp_path)


def test_default_descriptions_dir_is_the_download_cache(tmp_path, monkeypatch):
    assert resolve_descriptions_dir() == (tmp_path / "no-cache" / "wca" / "descriptions", False)
    monkeypatch.setenv("WCA_CACHE_DIR", str(tmp_path / "cache"))
    assert resolve_descriptions_dir() == (tmp_path / "cache" / "descriptions", False)
    with pytest.raises(FileNotFoundError, match=r"descriptions_dir\) does not exist"):
        resolve_descriptions_dir(tmp_path / "missing")


def test_descriptions_dir_without_the_dataset_keeps_own_names(tmp_path, descriptors_dir):
    mini.make_cub(tmp_path, descriptors_dir, [(0, 0)])
    (tmp_path / "empty").mkdir()
    dataset = load_dataset("cub", tmp_path, descriptions_dir=tmp_path / "empty")
    assert dataset.classnames[3] == "Groove billed Ani"


def test_dataset_validates_labels(tmp_path):
    path = mini.write_image(tmp_path / "a.jpg")
    with pytest.raises(ValueError, match=r"labels \[2\] outside 0..1"):
        Dataset(
            name="x",
            split="all",
            root=tmp_path,
            paths=[path],
            labels=[2],
            classnames=["a", "b"],
            descriptions_name=None,
        )
