"""The demo world: small coloured shapes and composite "creatures" made of three parts, the
classes of its zero-shot task, their texts, the test set and the training stream. Scenes are
drawn by :mod:`wca.demo.scene`; the generator is a pure function of its seed: the same seed
gives the same pixels.

The zero-shot task has 24 composite classes in 8 families of 3 siblings. Every class has a body
(a shape of one colour), a smaller part on top and a tiny part on its right side; the siblings of a
family share body and top part and differ only in the colour of the tiny side part, a detail that
the full view of a test image blurs and that a zoomed crop resolves.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from PIL import Image
from torch import Tensor

from wca.demo.scene import (
    COLOUR_NAMES,
    COLOURS,
    PART_KINDS,
    SHAPES,
    Scene,
    backdrop,
    composites,
    free_objects,
    render,
)

__all__ = [
    "COLOURS",
    "COLOUR_NAMES",
    "PART_KINDS",
    "SHAPES",
    "DemoClass",
    "DemoTestSet",
    "Part",
    "TrainingStream",
    "class_descriptions",
    "class_descriptors",
    "class_sentences",
    "demo_classes",
    "part_discs",
    "render_scenes",
    "render_test_images",
    "sibling_groups",
    "test_scenes",
]

CLASS_NAMES = (
    "zorbel",
    "quimble",
    "fennick",
    "drasket",
    "plimmet",
    "vortag",
    "snibble",
    "gorvin",
    "tamblet",
    "wuzzer",
    "krellin",
    "mopsel",
    "brindle",
    "yaffle",
    "skarrow",
    "nibbet",
    "corvash",
    "dwimble",
    "fluggen",
    "hestra",
    "jorrin",
    "lupkin",
    "pewtle",
    "rastov",
)


@dataclass(frozen=True)
class Part:
    shape: str
    colour: str

    def text(self) -> str:
        return f"{self.colour} {self.shape}"


def article(phrase: str) -> str:
    """``phrase`` with its indefinite article: "an orange circle", "a red circle"."""
    return f"{'an' if phrase[0] in 'aeiou' else 'a'} {phrase}"


@dataclass(frozen=True)
class DemoClass:
    """A composite class: a body, a smaller part on top and a tiny part on its right side."""

    name: str
    body: Part
    top: Part
    side: Part

    def descriptions(self) -> list[str]:
        """The class's part descriptions, phrased as the training captions phrase parts."""
        return [
            f"{article(self.body.text())} body",
            f"a small {self.top.text()} on top",
            f"a tiny {self.side.text()} on the side",
        ]


def demo_classes() -> list[DemoClass]:
    """The 24 classes of the zero-shot task (fixed: 8 families x 3 siblings)."""
    # family: (body shape, body colour, top shape, top colour, side shape, 3 side colours)
    families = [
        ("circle", "red", "square", "yellow", "circle", ("blue", "green", "white")),
        ("square", "blue", "triangle", "white", "square", ("red", "yellow", "cyan")),
        ("triangle", "green", "circle", "purple", "circle", ("orange", "blue", "white")),
        ("cross", "yellow", "circle", "blue", "square", ("red", "purple", "green")),
        ("square", "purple", "cross", "cyan", "circle", ("yellow", "white", "orange")),
        ("circle", "cyan", "triangle", "red", "square", ("green", "purple", "yellow")),
        ("triangle", "orange", "square", "green", "circle", ("cyan", "red", "purple")),
        ("cross", "white", "square", "red", "circle", ("blue", "orange", "green")),
    ]
    classes = []
    for f, (bs, bc, ts, tc, ss, side_colours) in enumerate(families):
        for s, sc in enumerate(side_colours):
            classes.append(
                DemoClass(CLASS_NAMES[3 * f + s], Part(bs, bc), Part(ts, tc), Part(ss, sc))
            )
    # Alphabetical, so that an exported image folder's sorted class folders keep the labels.
    return sorted(classes, key=lambda c: c.name)


def sibling_groups(classes: list[DemoClass] | None = None) -> list[list[int]]:
    """Label indices of each family (classes sharing body and top part)."""
    classes = classes or demo_classes()
    groups: dict[tuple[Part, Part], list[int]] = {}
    for i, c in enumerate(classes):
        groups.setdefault((c.body, c.top), []).append(i)
    return list(groups.values())


def class_descriptions(classes: list[DemoClass] | None = None) -> dict[str, list[str]]:
    """The task's part descriptions in the published format ``{class: [description, ...]}``."""
    return {c.name: c.descriptions() for c in classes or demo_classes()}


# How the part descriptions become each method's texts (chosen on a validation set rendered
# with another seed than the test set, per method; see docs/demo.md).
DESCRIPTOR_TEMPLATE = "{d}"  # CLIP-D adds "{class}, which is/has ..." by its own rule
SENTENCE_TEMPLATE = "a {c}, which has {d}."  # CuPL-style sentences, also WCA's descriptions


def class_descriptors(
    classes: list[DemoClass] | None = None, template: str = DESCRIPTOR_TEMPLATE
) -> dict[str, list[str]]:
    """CLIP-D descriptors (``clip-d.json``): ``template`` with ``{d}`` a part description."""
    return {
        c.name: [template.format(d=d) for d in c.descriptions()] for c in classes or demo_classes()
    }


def class_sentences(
    classes: list[DemoClass] | None = None, template: str = SENTENCE_TEMPLATE
) -> dict[str, list[str]]:
    """CuPL-style sentences (``cupl.json``): ``template`` with ``{c}`` the class name and ``{d}``
    a part description."""
    return {
        c.name: [template.format(c=c.name, d=d) for d in c.descriptions()]
        for c in classes or demo_classes()
    }


def _class_parts(classes: list[DemoClass]) -> Tensor:
    """``[C, 3, 2]`` (shape, colour) indices of body, top and side of each class."""
    return torch.tensor(
        [
            [[SHAPES.index(p.shape), COLOUR_NAMES.index(p.colour)] for p in (c.body, c.top, c.side)]
            for c in classes
        ]
    )


# --------------------------------------------------------------------------------------------
# Test set


# Test composites: body radius as a fraction of the image side (the tiny side part is then
# about 1.2-1.5 px in the 64-pixel full view and 2.5-3 px inside a half-size crop).
TEST_BODY_RADIUS = (0.05, 0.06)
TEST_IMAGE_SIZE = 128
TEST_DISTRACTORS = 3


def test_scenes(
    labels: Tensor, seed: int, size: int = TEST_IMAGE_SIZE
) -> tuple[Scene, Tensor, Tensor]:
    """The test scenes of ``labels`` (the few small single-object distractors first, behind,
    then the composite of class ``labels[i]``: body, top, side) and their background and noise."""
    g = torch.Generator().manual_seed(seed)
    parts = _class_parts(demo_classes())[labels]
    b = labels.shape[0]
    lo, hi = TEST_BODY_RADIUS
    body = lo + (hi - lo) * torch.rand(b, generator=g)
    comp = composites(parts, body, g)
    distract = free_objects(b, TEST_DISTRACTORS, 0.02, 0.05, g)
    background, noise = backdrop(b, size, g)
    return Scene.stack(distract, comp), background, noise


def render_scenes(
    scene: Scene, background: Tensor, noise: Tensor, size: int, chunk: int = 64
) -> Tensor:
    """uint8 images ``[B, 3, size, size]`` of a scene batch, rendered ``chunk`` at a time."""
    out = [
        render(scene.rows(i, i + chunk), size, background[i : i + chunk], noise[i : i + chunk])
        for i in range(0, len(background), chunk)
    ]
    return (torch.cat(out) * 255).round().to(torch.uint8)


def render_test_images(
    labels: Tensor, seed: int, size: int = TEST_IMAGE_SIZE, chunk: int = 64
) -> Tensor:
    """uint8 test images ``[B, 3, size, size]``: one composite of class ``labels[i]`` each,
    plus a few small single-object distractors drawn first (behind it)."""
    return render_scenes(*test_scenes(labels, seed, size), size, chunk)


def part_discs(scene: Scene, size: int) -> Tensor:
    """Where each test scene's composite parts are: ``[B, 3, 3]``, per part (body, top, side:
    :data:`PART_KINDS`) its centre x, y and radius in pixels of a ``size``-pixel image (pixel
    ``(c, r)`` spans [c, c + 1) x [r, r + 1)). The radius is the shape's unit: a circle's
    radius, a square's half-side / 0.82, a triangle's circumradius / 1.15, a cross's arm."""
    kinds = len(PART_KINDS)
    return torch.stack([scene.x, scene.y, scene.radius], -1)[:, -kinds:] * size


class DemoTestSet:
    """The zero-shot test set: ``per_class`` images of every class, rendered at ``size`` px.

    A Dataset in the project's sense: ``__len__``, ``__getitem__ -> (PIL image, label)``,
    ``classnames`` and ``name``; ``parts`` says where each image's creature is
    (:func:`part_discs`).
    """

    name = "demo"
    descriptions_name = "demo"

    def __init__(self, per_class: int = 20, seed: int = 1234, size: int = TEST_IMAGE_SIZE):
        if per_class < 1:
            raise ValueError(f"per_class must be >= 1, got {per_class}")
        self.classes = demo_classes()
        self.classnames = [c.name for c in self.classes]
        self.labels = torch.arange(len(self.classes)).repeat_interleave(per_class)
        self.seed, self.size = seed, size
        scene, background, noise = test_scenes(self.labels, seed, size)
        self.pixels = render_scenes(scene, background, noise, size)
        self.parts = part_discs(scene, size)  # [B, 3, 3]: x, y, radius (px) of body, top, side

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        array = self.pixels[index].permute(1, 2, 0).numpy()
        return Image.fromarray(array, "RGB"), int(self.labels[index])

    def image_identities(self) -> list[str]:
        """One line per image, what renders it (the feature cache keys the set by them: test
        sets of other seeds or sizes never share features)."""
        return [
            f"demo test image {index}: class {int(label)}, seed {self.seed}, {self.size} px"
            for index, label in enumerate(self.labels)
        ]


# --------------------------------------------------------------------------------------------
# Training stream


def _object_phrase(shape: int, colour: int) -> str:
    return f"{COLOUR_NAMES[colour]} {SHAPES[shape]}"


def _list_phrase(items: list[str]) -> str:
    if len(items) == 1:
        return items[0]
    return ", ".join(items[:-1]) + " and " + items[-1]


class TrainingStream:
    """An endless, seeded stream of (images ``[B,3,S,S]`` float in [0,1], captions) batches.

    Each batch mixes three kinds of images:

    - single objects in groups that share a colour and differ in shape (hard negatives, so
      shape must be learned), captioned "a red circle.";
    - scenes of 2-4 objects, captioned by listing them;
    - composites (the 24 named classes or random part combinations) at scales from tiny to
      crop-sized, with 0-2 distractors, captioned by name ("a photo of a zorbel."), by parts
      ("a red circle body, a small yellow square on top and a tiny blue circle on the side.")
      or both.
    """

    def __init__(self, seed: int, batch_size: int = 128, image_size: int = 64):
        self.g = torch.Generator().manual_seed(seed)
        self.batch_size = batch_size
        self.size = image_size
        self.classes = demo_classes()
        self.class_parts = _class_parts(self.classes)
        self.families = torch.tensor(sibling_groups(self.classes))

    def _rand(self, n: int) -> Tensor:
        return torch.rand(n, generator=self.g)

    def _singles(self, n: int) -> tuple[Scene, list[str]]:
        g = self.g
        scene = free_objects(n, 1, 0.04, 0.3, g)
        group = len(SHAPES)  # groups of 4: one colour, all four shapes
        colour = torch.randint(len(COLOURS), ((n + group - 1) // group,), generator=g)
        scene.colour = colour.repeat_interleave(group)[:n].view(n, 1)
        scene.shape = torch.arange(n).remainder(group).view(n, 1)
        caps = [
            f"{article(_object_phrase(int(s), int(c)))}."
            for s, c in zip(scene.shape[:, 0], scene.colour[:, 0], strict=False)
        ]
        return scene, caps

    def _multi(self, n: int) -> tuple[Scene, list[str]]:
        g = self.g
        scene = free_objects(n, 4, 0.04, 0.18, g)
        count = torch.randint(2, 5, (n,), generator=g)
        scene.valid = torch.arange(4).view(1, 4) < count.view(n, 1)
        caps = []
        for i in range(n):
            items = [
                article(_object_phrase(int(scene.shape[i, j]), int(scene.colour[i, j])))
                for j in range(int(count[i]))
            ]
            caps.append(_list_phrase(items) + ".")
        return scene, caps

    def _composite(self, n: int) -> tuple[Scene, list[str]]:
        g = self.g
        named = self._rand(n) < 0.6
        # Named composites cycle through the members of random families: with 8 families, a
        # batch holds siblings of most families (hard negatives differing in the side colour).
        family = torch.randint(len(self.families), (n,), generator=g)
        cls = self.families[family, torch.arange(n).remainder(self.families.shape[1])]
        parts = torch.stack(
            [
                torch.randint(len(SHAPES), (n, 3), generator=g),
                torch.randint(len(COLOURS), (n, 3), generator=g),
            ],
            -1,
        )
        parts = torch.where(named.view(n, 1, 1), self.class_parts[cls], parts)
        body = torch.exp(math.log(0.05) + (math.log(0.25) - math.log(0.05)) * self._rand(n))
        comp = composites(parts, body, g)
        distract = free_objects(n, 2, 0.03, 0.08, g)
        distract.valid = torch.arange(2).view(1, 2) < torch.randint(0, 3, (n, 1), generator=g)
        scene = Scene.stack(distract, comp)
        style = torch.randint(3, (n,), generator=g)
        caps = []
        for i in range(n):
            p = [_object_phrase(int(parts[i, j, 0]), int(parts[i, j, 1])) for j in range(3)]
            described = f"{article(p[0])} body, a small {p[1]} on top and a tiny {p[2]} on the side"
            if not named[i]:
                caps.append(f"{described}.")
            elif style[i] == 0:
                caps.append(f"a photo of a {self.classes[int(cls[i])].name}.")
            elif style[i] == 1:
                caps.append(f"a {self.classes[int(cls[i])].name} with {described}.")
            else:
                caps.append(f"a {self.classes[int(cls[i])].name}, which has {described}.")
        return scene, caps

    def next_batch(self) -> tuple[Tensor, list[str]]:
        n = self.batch_size
        n_single, n_multi = n // 4, n // 4
        n_comp = n - n_single - n_multi
        parts = [self._singles(n_single), self._multi(n_multi), self._composite(n_comp)]
        scene = Scene.cat([p[0] for p in parts])
        captions = [c for p in parts for c in p[1]]
        background, noise = backdrop(n, self.size, self.g)
        return render(scene, self.size, background, noise), captions
