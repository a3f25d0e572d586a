"""Drawing the demo world: scenes of coloured shapes, rendered by vectorised torch ops from
signed distance functions, so a batch of 64-pixel images costs well under a millisecond per image
on a CPU. Every function here is a pure function of its generator: the same seed, the same pixels.

A composite object ("creature") is three parts: a body, a smaller part on top and a tiny part on
its right side, placed by the part geometry below.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

SHAPES = ("circle", "square", "triangle", "cross")
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.90, 0.12, 0.10),
    "green": (0.15, 0.75, 0.20),
    "blue": (0.15, 0.30, 0.95),
    "yellow": (0.95, 0.90, 0.15),
    "purple": (0.60, 0.20, 0.80),
    "cyan": (0.15, 0.85, 0.90),
    "orange": (1.00, 0.55, 0.05),
    "white": (0.97, 0.97, 0.97),
}
COLOUR_NAMES = tuple(COLOURS)
_RGB = torch.tensor(list(COLOURS.values()))

# Part geometry of a composite, relative to the body radius R: (radius factor, dx, dy).
TOP_RADIUS, SIDE_RADIUS = 0.55, 0.38
TOP_OFFSET = (0.0, -(1.0 + TOP_RADIUS) * 0.95)
SIDE_OFFSET = ((1.0 + SIDE_RADIUS) * 0.95, 0.0)
PART_KINDS = ("body", "top", "side")  # a composite's objects, in drawing order


@dataclass
class Scene:
    """A batch of scenes of at most K objects each: all fields are ``[B, K]`` tensors.

    Coordinates and radii are fractions of the image side, so one scene renders at any size.
    """

    x: Tensor
    y: Tensor
    radius: Tensor
    angle: Tensor
    shape: Tensor  # index into SHAPES
    colour: Tensor  # index into COLOURS
    valid: Tensor  # bool

    @staticmethod
    def cat(scenes: list[Scene]) -> Scene:
        """The scenes one after the other (batch), padded with invalid objects to one K."""
        k = max(s.x.shape[1] for s in scenes)

        def pad(t: Tensor, value: float | bool) -> Tensor:
            return torch.nn.functional.pad(t, (0, k - t.shape[1]), value=value)

        fields = tuple(Scene.__dataclass_fields__)
        return Scene(*(torch.cat([pad(getattr(s, f), _PAD[f]) for s in scenes]) for f in fields))

    @staticmethod
    def stack(back: Scene, front: Scene) -> Scene:
        """Each scene of ``back`` with the objects of ``front`` drawn over it (same batch)."""
        fields = Scene.__dataclass_fields__
        return Scene(*(torch.cat([getattr(back, f), getattr(front, f)], 1) for f in fields))

    def rows(self, start: int, stop: int) -> Scene:
        """The scenes ``start`` to ``stop`` of the batch."""
        return Scene(*(getattr(self, f)[start:stop] for f in Scene.__dataclass_fields__))


_PAD = {"x": 0.5, "y": 0.5, "radius": 1.0, "angle": 0.0, "shape": 0, "colour": 0, "valid": False}


def _sdf(px: Tensor, py: Tensor, shape: int) -> Tensor:
    """Signed distance (in radius units) to a unit shape, for points in the object's frame."""
    if shape == 0:  # circle
        return torch.sqrt(px * px + py * py) - 1.0
    if shape == 1:  # square
        return torch.maximum(px.abs(), py.abs()) - 0.82
    if shape == 2:  # equilateral triangle, circumradius 1.15
        tri = None
        for k in range(3):
            a = -math.pi / 2 + k * 2 * math.pi / 3
            edge = px * math.cos(a) + py * math.sin(a)
            tri = edge if tri is None else torch.maximum(tri, edge)
        return tri - 0.575
    ax, ay, arm = px.abs(), py.abs(), 0.36  # cross
    return torch.minimum(torch.maximum(ax - 1.0, ay - arm), torch.maximum(ax - arm, ay - 1.0))


def render(scene: Scene, size: int, background: Tensor, noise: Tensor) -> Tensor:
    """Draw a scene batch as float images ``[B, 3, size, size]`` in [0, 1].

    ``background`` is ``[B]`` grey levels and ``noise`` ``[B, 3, size, size]`` pixel noise.
    Objects are painted in order (later on top) with anti-aliased edges.
    """
    b, k = scene.x.shape
    grid = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    gy, gx = grid.view(1, 1, size, 1), grid.view(1, 1, 1, size)
    image = background.view(b, 1, 1, 1).expand(b, 3, size, size).clone()
    for j in range(k):
        for shape in range(len(SHAPES)):
            rows = torch.nonzero(scene.valid[:, j] & (scene.shape[:, j] == shape)).flatten()
            if len(rows) == 0:
                continue
            n = len(rows)
            dx = gx - scene.x[rows, j].view(n, 1, 1, 1)
            dy = gy - scene.y[rows, j].view(n, 1, 1, 1)
            angle = scene.angle[rows, j].view(n, 1, 1, 1)
            cos, sin = torch.cos(angle), torch.sin(angle)
            r = scene.radius[rows, j].view(n, 1, 1, 1)
            px, py = (cos * dx + sin * dy) / r, (-sin * dx + cos * dy) / r
            cover = (0.5 - _sdf(px, py, shape) * (r * size)).clamp(0, 1)  # distance in pixels
            rgb = _RGB[scene.colour[rows, j]].view(n, 3, 1, 1)
            image[rows] += cover * (rgb - image[rows])
    return (image + noise).clamp(0, 1)


def backdrop(b: int, size: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
    """``[B]`` grey background levels and ``[B, 3, size, size]`` pixel noise."""
    background = 0.12 + 0.25 * torch.rand(b, generator=g)
    noise = 0.035 * torch.randn(b, 3, size, size, generator=g)
    return background, noise


def free_objects(b: int, k: int, rmin: float, rmax: float, g: torch.Generator) -> Scene:
    """``[B, k]`` random single objects with radii log-uniform in [rmin, rmax] (image fractions)."""
    radius = torch.exp(
        math.log(rmin) + (math.log(rmax) - math.log(rmin)) * torch.rand(b, k, generator=g)
    )
    margin = radius.clamp(max=0.45)
    x = margin + (1 - 2 * margin) * torch.rand(b, k, generator=g)
    y = margin + (1 - 2 * margin) * torch.rand(b, k, generator=g)
    return Scene(
        x=x,
        y=y,
        radius=radius,
        angle=torch.rand(b, k, generator=g) * 2 * math.pi,
        shape=torch.randint(len(SHAPES), (b, k), generator=g),
        colour=torch.randint(len(COLOURS), (b, k), generator=g),
        valid=torch.ones(b, k, dtype=torch.bool),
    )


def composites(parts: Tensor, body_radius: Tensor, g: torch.Generator) -> Scene:
    """Composite objects ``[B, 3]`` (body, top, side: :data:`PART_KINDS`) from part indices
    ``parts[B, 3, 2]`` (shape, colour).

    The body radius is an image fraction; the object is placed at random where it fits.
    """
    b = parts.shape[0]
    extent_l, extent_r = body_radius, body_radius * (SIDE_OFFSET[0] + SIDE_RADIUS)
    extent_t, extent_b = body_radius * (-TOP_OFFSET[1] + TOP_RADIUS), body_radius
    u, v = torch.rand(b, generator=g), torch.rand(b, generator=g)
    cx = extent_l + (1 - extent_l - extent_r).clamp(min=0) * u
    cy = extent_t + (1 - extent_t - extent_b).clamp(min=0) * v
    rel = torch.tensor([[0.0, 0.0, 1.0], [*TOP_OFFSET, TOP_RADIUS], [*SIDE_OFFSET, SIDE_RADIUS]])
    br = body_radius.view(b, 1)
    jitter = 0.12 * (torch.rand(b, 3, generator=g) - 0.5)
    return Scene(
        x=cx.view(b, 1) + rel[:, 0] * br,
        y=cy.view(b, 1) + rel[:, 1] * br,
        radius=rel[:, 2] * br,
        angle=jitter,
        shape=parts[:, :, 0],
        colour=parts[:, :, 1],
        valid=torch.ones(b, 3, dtype=torch.bool),
    )
