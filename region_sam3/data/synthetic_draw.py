"""Drawing primitives of the synthetic benchmark (:mod:`region_sam3.data.synthetic`): textured
backgrounds, shape polygons and masks, clutter strokes, box overlap. Changing anything here
changes the rendered data: bump `synthetic.GENERATOR_VERSION`.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle", "star", "ring", "cross")
COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (40, 70, 220),
    "yellow": (230, 210, 40),
    "purple": (150, 50, 190),
}
BACKGROUNDS = ("gradient", "stripes", "noise", "checker")


def background(rng: np.random.Generator, size: int) -> np.ndarray:
    """[H,W,3] float in [0,255]: a random texture mixing two random colours."""
    colour_a, colour_b = rng.uniform(0, 255, (2, 3))
    yy, xx = np.mgrid[0:size, 0:size] / size
    kind = BACKGROUNDS[rng.integers(len(BACKGROUNDS))]
    angle = rng.uniform(0, math.pi)
    along = xx * math.cos(angle) + yy * math.sin(angle)
    if kind == "gradient":
        weight = (along - along.min()) / (np.ptp(along) + 1e-6)
    elif kind == "stripes":
        weight = 0.5 + 0.5 * np.sin(2 * math.pi * rng.uniform(3, 12) * along)
    elif kind == "checker":
        cells = rng.integers(4, 14)
        weight = ((xx * cells).astype(int) + (yy * cells).astype(int)) % 2 * 1.0
    else:
        grid = rng.uniform(0, 1, (rng.integers(3, 9),) * 2)
        coarse = np.asarray(
            Image.fromarray((grid * 255).astype(np.uint8)).resize((size, size), Image.BICUBIC)
        )
        weight = coarse / 255.0
    return colour_a * (1 - weight[..., None]) + colour_b * weight[..., None]


def _polygon(shape: str, cx: float, cy: float, radius: float, angle: float) -> list[tuple]:
    if shape == "square":
        offsets = [math.pi / 4 + k * math.pi / 2 for k in range(4)]
        radii = [radius] * 4
    elif shape == "triangle":
        offsets = [k * 2 * math.pi / 3 for k in range(3)]
        radii = [radius] * 3
    elif shape == "star":
        offsets = [k * math.pi / 5 for k in range(10)]
        radii = [radius if k % 2 == 0 else 0.45 * radius for k in range(10)]
    elif shape == "cross":
        arm = 0.35
        corners = [
            (arm, 1),
            (arm, arm),
            (1, arm),
            (1, -arm),
            (arm, -arm),
            (arm, -1),
            (-arm, -1),
            (-arm, -arm),
            (-1, -arm),
            (-1, arm),
            (-arm, arm),
            (-arm, 1),
        ]
        offsets = [math.atan2(y, x) for x, y in corners]
        radii = [radius * math.hypot(x, y) / math.sqrt(2) for x, y in corners]
    else:
        raise ValueError(shape)
    return [
        (cx + r * math.cos(o + angle), cy + r * math.sin(o + angle)) for o, r in zip(offsets, radii)
    ]


def shape_mask(shape: str, size: int, cx: float, cy: float, radius: float, angle: float):
    canvas = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    if shape in ("circle", "ring"):
        draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=1)
        if shape == "ring":
            inner = 0.55 * radius
            draw.ellipse([cx - inner, cy - inner, cx + inner, cy + inner], fill=0)
    else:
        draw.polygon(_polygon(shape, cx, cy, radius, angle), fill=1)
    return np.asarray(canvas, dtype=bool)


def draw_clutter(rng: np.random.Generator, image: np.ndarray, count: int) -> None:
    """Strokes and irregular blobs in object colours: distractors that are no category."""
    size = image.shape[0]
    palette = list(COLOURS.values())
    canvas = Image.fromarray(image.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    for _ in range(count):
        colour = tuple(
            int(c)
            for c in np.clip(palette[rng.integers(len(palette))] + rng.normal(0, 15, 3), 0, 255)
        )
        if rng.random() < 0.5:
            points = [tuple(p) for p in rng.uniform(0, size, (rng.integers(2, 5), 2))]
            draw.line(points, fill=colour, width=int(rng.integers(1, 4)))
        else:
            centre = rng.uniform(0, size, 2)
            vertices = centre + rng.normal(0, size * 0.04, (int(rng.integers(5, 9)), 2))
            draw.polygon([tuple(v) for v in vertices], fill=colour)
    image[:] = np.asarray(canvas, dtype=np.float64)


def boxes_overlap(box: np.ndarray, others: list[np.ndarray]) -> float:
    """Max over `others` of intersection area / smaller box area; boxes are x0,y0,x1,y1."""
    worst = 0.0
    for other in others:
        w = min(box[2], other[2]) - max(box[0], other[0])
        h = min(box[3], other[3]) - max(box[1], other[1])
        if w > 0 and h > 0:
            smaller = min(np.prod(box[2:] - box[:2]), np.prod(other[2:] - other[:2]))
            worst = max(worst, w * h / smaller)
    return worst
