"""The demo world: deterministic rendering, the task's classes and its texts."""

from __future__ import annotations

import torch

from wca.demo.world import (
    DemoTestSet,
    TrainingStream,
    class_descriptions,
    class_descriptors,
    class_sentences,
    demo_classes,
    sibling_groups,
)


def test_training_stream_is_deterministic():
    a_images, a_captions = TrainingStream(seed=3, batch_size=24).next_batch()
    b_images, b_captions = TrainingStream(seed=3, batch_size=24).next_batch()
    c_images, _ = TrainingStream(seed=4, batch_size=24).next_batch()
    assert torch.equal(a_images, b_images)
    assert a_captions == b_captions
    assert not torch.equal(a_images, c_images)
    assert a_images.shape == (24, 3, 64, 64)
    assert float(a_images.min()) >= 0 and float(a_images.max()) <= 1


def test_test_set_is_deterministic_and_a_dataset():
    a, b = DemoTestSet(per_class=2, seed=7), DemoTestSet(per_class=2, seed=7)
    assert torch.equal(a.pixels, b.pixels)
    assert not torch.equal(a.pixels, DemoTestSet(per_class=2, seed=8).pixels)
    assert len(a) == 2 * len(a.classnames) == 48
    image, label = a[5]
    assert image.mode == "RGB" and image.size == (128, 128)
    assert label == 2 and a.classnames[label] == demo_classes()[2].name
    assert a.name == "demo"


def test_classes_are_fine_grained_siblings():
    classes = demo_classes()
    descriptions = class_descriptions(classes)
    assert [c.name for c in classes] == sorted(descriptions)  # alphabetical: folder order
    assert all(len(texts) == 3 for texts in descriptions.values())
    for group in sibling_groups(classes):
        assert len(group) == 3
        texts = [descriptions[classes[i].name] for i in group]
        assert all(t[:2] == texts[0][:2] for t in texts)  # same body and top part
        assert len({t[2] for t in texts}) == 3  # the tiny side part tells them apart


def test_method_texts_follow_the_descriptions():
    name = demo_classes()[0].name
    parts = class_descriptions()[name]
    assert class_descriptors()[name] == parts
    sentences = class_sentences()[name]
    assert all(name in s and p in s for s, p in zip(sentences, parts, strict=True))
