"""BiFTA against float64 transcriptions of the authors' code (tmlr-group/BiFTA ``helper.py``:
``compute_IoU``, ``filter_augmented_samples``, ``zeroshot_classifier`` with ``tt_scale``;
``main.py``'s scoring of the sampled crops). Their repository has no code for the description
refinement, only its outputs: its transcription here is the paper's rule, written as their
crop filter is (``max(...) <= threshold`` keeps)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from wca.crops import BIFTA_MAX_IOU, BIFTA_QUEUE, crop_boxes, iou_filter
from wca.methods import TextSources, WCAHead, build_head
from wca.methods.bifta import refine_descriptions

D = 12


def unit(*shape, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=generator, dtype=torch.float64), dim=-1)


# --------------------------------------------------------------------------- view refinement


def compute_IoU(boxes, box2):  # noqa: N802  (their name)
    iou_list = []
    for box1 in boxes:
        x1_inter = max(box1[0], box2[0])
        y1_inter = max(box1[1], box2[1])
        x2_inter = min(box1[2], box2[2])
        y2_inter = min(box1[3], box2[3])
        inter_width = max(0, x2_inter - x1_inter)
        inter_height = max(0, y2_inter - y1_inter)
        inter_area = inter_width * inter_height
        box1_area = (box1[2] - box1[0]) * (box1[3] - box1[1])
        box2_area = (box2[2] - box2[0]) * (box2[3] - box2[1])
        union_area = box1_area + box2_area - inter_area
        iou = inter_area / union_area if union_area > 0 else 0
        iou_list.append(iou)
    return iou_list


def filter_augmented_samples(augmented_imgs, img_coordinates, threshold, max_queue_len=50):
    crop_samples = augmented_imgs[1:]
    crop_sample_coordinates = img_coordinates[1:]
    queue = []
    saved_coordinates = []
    filtered_augmented_imgs = [augmented_imgs[0]]
    for i in range(len(crop_sample_coordinates)):
        next_coordinates = crop_sample_coordinates[i]
        if len(saved_coordinates) == 0:
            queue.append(crop_samples[i])
            saved_coordinates.append(next_coordinates)
        else:
            iou = compute_IoU(saved_coordinates, next_coordinates)
            if max(iou) <= threshold:
                queue.append(crop_samples[i])
                saved_coordinates.append(next_coordinates)
                if len(queue) >= max_queue_len:
                    break
    num_valid_crops = len(queue)
    if len(queue) < max_queue_len:
        zero_crop = torch.zeros_like(crop_samples[0])
        for _ in range(max_queue_len - len(queue)):
            queue.append(zero_crop)
    filtered_augmented_imgs.extend(queue)
    return torch.stack(filtered_augmented_imgs), num_valid_crops


def authors_kept_crops(boxes, threshold, max_queue_len):
    """The crops their loader keeps, by index: "images" that are their own index + 1."""
    images = torch.arange(len(boxes) + 1, dtype=torch.float64)[:, None]
    coordinates = [None] + [tuple(box) for box in boxes]
    filtered, valid = filter_augmented_samples(images, coordinates, threshold, max_queue_len)
    return [int(image) - 1 for image in filtered[1 : 1 + valid, 0]]


SIDE = 1000
CASES = [  # (boxes as (left, top, right, bottom), max_iou, limit), IoU with the first box:
    ([(0, 0, SIDE, SIDE), (0, 0, SIDE, 850)], 0.85, 100),  # exactly 0.85: kept
    ([(0, 0, SIDE, SIDE), (0, 0, SIDE, 851)], 0.85, 100),  # 0.851: dropped
    ([(0, 0, SIDE, SIDE), (0, 0, SIDE, 849)], 0.85, 100),  # 0.849: kept
    # the third box overlaps the dropped second one (0.95) but the first only at 0.8: kept
    ([(0, 0, SIDE, SIDE), (0, 0, SIDE, 900), (0, 0, SIDE, 800)], 0.85, 100),
    # kept boxes only are compared: a box near two kept ones is dropped by the nearer
    ([(0, 0, 100, 100), (200, 0, 300, 100), (200, 0, 300, 95), (0, 5, 100, 100)], 0.85, 100),
    # the queue is full after two: the rest are never looked at
    ([(0, 0, 10, 10), (20, 20, 30, 30), (40, 40, 50, 50), (60, 60, 70, 70)], 0.85, 2),
    ([(0, 0, 10, 10), (0, 0, 10, 10)], 1.0, 100),  # identical boxes: IoU 1 <= 1, kept
    ([(5, 5, 6, 6)], 0.0, 100),  # a single box is always kept
]


@pytest.mark.parametrize("boxes,max_iou,limit", CASES)
def test_view_refinement_keeps_the_crops_the_authors_loader_keeps(boxes, max_iou, limit):
    array = np.array(boxes, dtype=np.int64)
    assert iou_filter(array, max_iou, limit) == authors_kept_crops(boxes, max_iou, limit)


def test_constructed_cases_cover_the_threshold():
    kept = [iou_filter(np.array(boxes), max_iou, limit) for boxes, max_iou, limit in CASES]
    assert kept[:4] == [[0, 1], [0], [0, 1], [0, 2]]
    assert kept[4] == [0, 1] and kept[5] == [0, 1] and kept[6] == [0, 1]


@pytest.mark.parametrize("n", [100, 300])
@pytest.mark.parametrize("index", [0, 1, 2])
def test_the_bifta_sampler_is_the_authors_filter_over_uniform_candidates(n, index):
    """Their candidates (side U(alpha, beta) x the short side, uniform position) are the
    ``random`` sampler's; the pool holds what their loader keeps, accepted crops first, then
    accepted crops again where fewer than ``n`` were kept."""
    height, width = 300, 400
    candidates = crop_boxes(height, width, n, 0.5, 0.9, seed=4, image_index=index)
    pool = crop_boxes(height, width, n, 0.5, 0.9, seed=4, image_index=index, strategy="bifta")
    kept = authors_kept_crops(candidates.tolist(), BIFTA_MAX_IOU, BIFTA_QUEUE)
    assert len(pool) == n and torch.equal(pool[: len(kept)], candidates[kept])
    accepted = {tuple(box) for box in candidates[kept].tolist()}
    assert {tuple(box) for box in pool[len(kept) :].tolist()} <= accepted
    assert (len(kept) == BIFTA_QUEUE) == (n == 300)  # 100 candidates leave the queue short


# --------------------------------------------------------------------------- description refinement


def paper_kept_descriptions(class_embeddings, threshold, top=None):
    """Description refinement as the paper states it, one class: in order, a description
    whose cosine with every kept one is at most the threshold is kept (the first always),
    until ``top`` are kept."""
    kept = []
    for j in range(len(class_embeddings)):
        if top is not None and len(kept) == top:
            break
        cosines = [float(class_embeddings[j] @ class_embeddings[k]) for k in kept]
        if not cosines or max(cosines) <= threshold:
            kept.append(j)
    return kept


def at_angles(*cosines_to_first):
    """Unit vectors in a plane at the angles whose cosines with the first are given."""
    angles = torch.tensor([0.0, *map(math.acos, cosines_to_first)], dtype=torch.float64)
    return torch.stack([angles.cos(), angles.sin()], dim=1)


def exactly(cosine):
    """A unit vector whose cosine with (1, 0) is exactly ``cosine``."""
    return torch.tensor([cosine, math.sqrt(1 - cosine**2)], dtype=torch.float64)


DESCRIPTION_CASES = [
    torch.stack([exactly(1.0), exactly(0.99)]),  # exactly at 0.99: kept
    torch.stack([exactly(1.0), exactly(0.99 + 1e-9)]),  # just above: dropped
    torch.stack([exactly(1.0), exactly(0.99 - 1e-9)]),  # just below: kept
    # the second is dropped (0.995); the third is 0.995 from it but 0.98 from the first: kept
    at_angles(0.995, 0.98),
    torch.stack([exactly(1.0), exactly(1.0), exactly(0.5)]),  # an exact duplicate: dropped
]


@pytest.mark.parametrize("vectors", DESCRIPTION_CASES)
def test_description_refinement_keeps_what_the_paper_keeps(vectors):
    mask = torch.ones(1, len(vectors), dtype=torch.bool)
    kept = refine_descriptions(vectors[None], mask, 0.99)[0].nonzero().flatten().tolist()
    assert kept == paper_kept_descriptions(vectors, 0.99)


def test_description_refinement_cases_cover_the_threshold():
    kept = []
    for vectors in DESCRIPTION_CASES:
        mask = torch.ones(1, len(vectors), dtype=torch.bool)
        kept.append(refine_descriptions(vectors[None], mask, 0.99)[0].nonzero().flatten().tolist())
    assert kept == [[0, 1], [0], [0, 1], [0, 2], [0, 2]]


def test_description_refinement_respects_padding_and_the_cap():
    emb = unit(3, 6, D, seed=1)
    emb[0, 2] = emb[0, 0]  # a duplicate
    mask = torch.ones(3, 6, dtype=torch.bool)
    mask[1, 4:] = False  # padding
    kept = refine_descriptions(emb, mask, 0.99, limit=4)
    for label in range(3):
        valid = mask[label].nonzero().flatten()
        expected = paper_kept_descriptions(emb[label, valid], 0.99, 4)
        assert kept[label].nonzero().flatten().tolist() == valid[expected].tolist()
    assert kept.sum(1).tolist() == [4, 4, 4] and not kept[0, 2] and not kept[1, 4:].any()


# --------------------------------------------------------------------------- the head


def zeroshot_classifier(descriptions, labels, tt_scale):
    """``zeroshot_classifier`` with ``tt_scale`` after the text encoder: per class, the
    descriptions weighted by softmax(tt_scale cos(description, label prompt)), normalised;
    ``[D, C]``."""
    zeroshot_weights = []
    for class_embeddings, label_embeddings in zip(descriptions, labels, strict=True):
        weight = class_embeddings @ label_embeddings[None].T
        weight = (weight * tt_scale).softmax(dim=0)
        class_embedding = (class_embeddings * weight).sum(dim=0)
        class_embedding /= class_embedding.norm()
        zeroshot_weights.append(class_embedding)
    return torch.stack(zeroshot_weights, dim=1)


def bifta_main(global_image_features, patch_embeds, zeroshot_weights, image_scale):
    """``main.py``'s scoring of one run's sampled crops."""
    patch_similarity_weights = (global_image_features[:, None] * patch_embeds).sum(-1)
    w_i = (patch_similarity_weights * image_scale).softmax(-1).unsqueeze(-1)
    aggregated_features = F.normalize((patch_embeds * w_i).sum(dim=1), dim=-1)
    return aggregated_features @ zeroshot_weights


class TableEncoder:
    """Texts -> the unit vectors of a table (float64), so descriptions can be near-duplicates."""

    def __init__(self, table):
        self.table = table

    def __call__(self, texts):
        return torch.stack([self.table[text] for text in texts])


def near_duplicate_world(classes=4, per_class=7, seed=3):
    names = [f"class {c}" for c in range(classes)]
    table, sentences = {}, {}
    vectors = unit(classes, per_class, D, seed=seed)
    for c, name in enumerate(names):
        sentences[name] = [f"{name} sentence {j}" for j in range(per_class)]
        for j, text in enumerate(sentences[name]):
            table[text] = vectors[c, j]
        # sentence 3 nearly repeats sentence 1; sentence 5 repeats sentence 0
        table[sentences[name][3]] = F.normalize(vectors[c, 1] + 0.01 * vectors[c, 2], dim=0)
        table[sentences[name][5]] = vectors[c, 0]
        table[f"a photo of a {name}."] = unit(D, seed=100 + c)
    return TextSources(names, sentences=sentences), TableEncoder(table), vectors


def test_bifta_equals_the_authors_scoring_of_refined_descriptions():
    sources, encoder, _ = near_duplicate_world()
    head = build_head("bifta", encoder, sources)
    assert isinstance(head, WCAHead) and head.uses_crops
    descriptions, labels = [], []
    for name in sources.classnames:
        class_embeddings = encoder(sources.sentences[name])
        kept = paper_kept_descriptions(class_embeddings, 0.99)
        assert 3 not in kept and 5 not in kept and len(kept) == 5
        descriptions.append(class_embeddings[kept])
        labels.append(encoder([f"a photo of a {name}."])[0])
    zeroshot_weights = zeroshot_classifier(descriptions, labels, math.exp(2.0))
    images, crops = unit(36, D, seed=7), unit(36, 9, D, seed=8)
    expected = bifta_main(images, crops, zeroshot_weights, math.exp(4.0))
    scores = head.logits(images, crops).double()  # the registry encodes texts in fp32
    torch.testing.assert_close(scores, expected, atol=1e-6, rtol=0)
    plain = build_head("wca", encoder, sources)  # WCA keeps the near-duplicates
    assert not torch.allclose(plain.logits(images, crops).double(), expected, atol=1e-4)


def test_bifta_options_and_per_dataset_cap():
    sources, encoder, _ = near_duplicate_world(per_class=60)
    for dataset, kept in [(None, 50), ("imagenet", 50), ("imagenet-r", 50), ("cub", 58)]:
        sources.dataset = dataset
        assert build_head("bifta", encoder, sources).mask.sum(1).tolist() == [kept] * 4
    capped = build_head("bifta", encoder, sources, max_descriptions=3)
    assert capped.mask.sum(1).tolist() == [3] * 4
    with pytest.raises(ValueError, match="max_cosine"):
        build_head("bifta", encoder, sources, max_cosine=1.5)
    with pytest.raises(ValueError, match="cupl.json"):
        build_head("bifta", encoder, TextSources(sources.classnames))
