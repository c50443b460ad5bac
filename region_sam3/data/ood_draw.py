"""Drawing primitives of the out-of-distribution benchmark (:mod:`region_sam3.data.ood_synthetic`).

Written independently of :mod:`region_sam3.data.synthetic_draw` on purpose: the point of the
OOD splits is scenes that the training generator's code never drew. Differences:

- shapes are implicit functions in a unit disc, rasterised by supersampling (anti-aliased
  coverage in [0,1], not PIL's hard 0/1 fill), with an aspect squash and per-instance shape
  parameters (ring hole, star depth, cross arm width, irregular triangles, rounded squares);
- objects are lit by a linear gradient *and* an off-centre highlight, with shade jitter;
- backgrounds are smooth colour blobs, 1/f ("photo-like") noise, or low-contrast near-flat
  tints, and distractors are soft desaturated ellipses, not strokes in object colours;
- edges are soft (a per-object blur of the coverage) and the whole image is blurred,
  gamma-shifted and noised like a camera.

Changing anything here changes the rendered data: bump `ood_synthetic.OOD_GENERATOR_VERSION`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

OOD_BACKGROUNDS = ("blobs", "pink_noise", "low_contrast")


@dataclass
class Geometry:
    """One object's placement: centre (px), radius (px), rotation (rad), aspect (minor/major
    axis, <= 1) and `params`, the shape's own parameters (see `_inside`)."""

    cx: float
    cy: float
    radius: float
    angle: float
    aspect: float
    params: tuple[float, ...] = ()

    def box(self) -> np.ndarray:
        """x0, y0, x1, y1 of the circumscribed circle (every shape lies inside it)."""
        return np.array([self.cx - self.radius, self.cy - self.radius,
                         self.cx + self.radius, self.cy + self.radius])


def random_geometry(rng: np.random.Generator, shape: str, cx: float, cy: float,
                    radius: float) -> Geometry:
    """Rotation uniform, aspect and shape parameter drawn per instance (the training generator
    draws every instance of a shape with the same proportions)."""
    round_shape = shape in ("circle", "ring", "square")
    aspect = rng.uniform(0.8, 1.0) if round_shape else rng.uniform(0.65, 1.0)
    params = {
        "ring": (rng.uniform(0.42, 0.68),),      # hole radius / outer radius
        "star": (rng.uniform(0.36, 0.62),),      # inner / outer vertex radius
        "cross": (rng.uniform(0.2, 0.4),),       # arm half-width / arm length
        "square": (rng.uniform(4.0, 12.0),),     # superellipse exponent: rounded corners
        "triangle": tuple(rng.uniform(-0.35, 0.35, 2)),  # vertex angle jitter: irregular
    }.get(shape, ())
    return Geometry(cx, cy, radius, rng.uniform(0, 2 * math.pi), aspect, params)


def _inside(shape: str, u: np.ndarray, v: np.ndarray, params: tuple[float, ...]) -> np.ndarray:
    """Membership of unit-disc coordinates (u, v) in `shape` (every shape fits the unit disc)."""
    param = params[0] if params else 0.0
    if shape == "circle":
        return u * u + v * v <= 1.0
    if shape == "ring":
        r2 = u * u + v * v
        return (r2 <= 1.0) & (r2 >= param * param)
    if shape == "square":
        half = 0.72
        return np.abs(u / half) ** param + np.abs(v / half) ** param <= 1.0
    if shape == "cross":
        arm = 0.72
        return ((np.abs(u) <= param * arm) & (np.abs(v) <= arm)) | (
            (np.abs(v) <= param * arm) & (np.abs(u) <= arm))
    if shape == "triangle":
        angles = [0.0, 2 * math.pi / 3 + params[0], 4 * math.pi / 3 + params[1]]
        return _in_polygon(u, v, [(math.cos(a), math.sin(a)) for a in angles])
    if shape == "star":
        points = [((1.0 if k % 2 == 0 else param) * math.cos(k * math.pi / 5 - math.pi / 2),
                   (1.0 if k % 2 == 0 else param) * math.sin(k * math.pi / 5 - math.pi / 2))
                  for k in range(10)]
        return _in_polygon(u, v, points)
    raise ValueError(f"ood renderer: unknown shape {shape!r}")


def _in_polygon(u: np.ndarray, v: np.ndarray, points: list[tuple[float, float]]) -> np.ndarray:
    """Even-odd ray casting, vectorised over the sample points."""
    inside = np.zeros(u.shape, dtype=bool)
    for (x1, y1), (x2, y2) in zip(points, points[1:] + points[:1]):
        if y1 == y2:
            continue
        crosses = (y1 > v) != (y2 > v)
        inside ^= crosses & (u < (x2 - x1) * (v - y1) / (y2 - y1) + x1)
    return inside


def coverage(shape: str, geometry: Geometry, size: int, supersample: int = 4) -> np.ndarray:
    """[H,W] float32 in [0,1]: fraction of each pixel's `supersample`² sub-samples inside the
    shape (pixel (i, j) spans [j, j+1) x [i, i+1)). Only the shape's box is sampled."""
    g = geometry
    x0, y0 = max(int(math.floor(g.cx - g.radius)) - 1, 0), max(int(math.floor(g.cy - g.radius)) - 1, 0)
    x1 = min(int(math.ceil(g.cx + g.radius)) + 1, size)
    y1 = min(int(math.ceil(g.cy + g.radius)) + 1, size)
    out = np.zeros((size, size), dtype=np.float32)
    if x1 <= x0 or y1 <= y0:
        return out
    offsets = (np.arange(supersample) + 0.5) / supersample
    xs = (np.arange(x0, x1)[:, None] + offsets[None]).ravel()
    ys = (np.arange(y0, y1)[:, None] + offsets[None]).ravel()
    dx, dy = xs[None, :] - g.cx, ys[:, None] - g.cy
    cos, sin = math.cos(g.angle), math.sin(g.angle)
    u = (dx * cos + dy * sin) / g.radius
    v = (-dx * sin + dy * cos) / (g.radius * g.aspect)
    inside = _inside(shape, u, v, g.params).astype(np.float32)
    h, w = y1 - y0, x1 - x0
    out[y0:y1, x0:x1] = inside.reshape(h, supersample, w, supersample).mean((1, 3))
    return out


def soften(alpha: np.ndarray, sigma: float) -> np.ndarray:
    """Soft edge: Gaussian blur of a coverage map (sigma in px; 0 leaves it unchanged)."""
    return ndimage.gaussian_filter(alpha, sigma) if sigma > 0 else alpha


def lit_colour(rng: np.random.Generator, base: tuple[int, int, int], geometry: Geometry,
               size: int) -> np.ndarray:
    """[H,W,3] float: the object's colour with shade jitter, a linear light gradient across it
    and an off-centre highlight (only its pixels under the coverage are used)."""
    g = geometry
    colour = np.asarray(base, np.float64) * rng.uniform(0.75, 1.15) + rng.uniform(-15, 15, 3)
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    direction = rng.uniform(0, 2 * math.pi)
    along = ((xx - g.cx) * math.cos(direction) + (yy - g.cy) * math.sin(direction)) / g.radius
    light = 1 + rng.uniform(0.1, 0.3) * along
    hx, hy = g.cx + 0.4 * g.radius * math.cos(direction), g.cy + 0.4 * g.radius * math.sin(direction)
    spot = np.exp(-((xx - hx) ** 2 + (yy - hy) ** 2) / (2 * (0.45 * g.radius) ** 2))
    light = light + rng.uniform(0.0, 0.25) * spot
    return colour[None, None] * light[..., None]


def _pink_noise(rng: np.random.Generator, size: int, exponent: float) -> np.ndarray:
    """[H,W] in [0,1]: noise with a 1/f^exponent power spectrum (natural-image-like)."""
    freq = np.hypot(*np.meshgrid(np.fft.fftfreq(size), np.fft.fftfreq(size)))
    freq[0, 0] = 1.0
    spectrum = np.fft.fft2(rng.normal(size=(size, size))) / freq ** (exponent / 2)
    field = np.real(np.fft.ifft2(spectrum))
    return (field - field.min()) / (np.ptp(field) + 1e-9)


def ood_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """[H,W,3] float in [0,255]: smooth blobs, 1/f noise or a low-contrast near-flat tint."""
    kind = OOD_BACKGROUNDS[int(rng.integers(len(OOD_BACKGROUNDS)))]
    yy, xx = (np.mgrid[0:size, 0:size] + 0.5) / size
    if kind == "blobs":
        image = np.broadcast_to(rng.uniform(30, 225, 3), (size, size, 3)).copy()
        for _ in range(int(rng.integers(5, 13))):
            centre, sigma = rng.uniform(0, 1, 2), rng.uniform(0.06, 0.3)
            weight = np.exp(-((xx - centre[0]) ** 2 + (yy - centre[1]) ** 2) / (2 * sigma**2))
            image += (rng.uniform(0, 255, 3) - image) * (0.8 * weight[..., None])
        return image
    if kind == "pink_noise":
        low, high = rng.uniform(0, 255, (2, 3))
        channels = [_pink_noise(rng, size, rng.uniform(1.6, 2.6)) for _ in range(3)]
        shared = _pink_noise(rng, size, 2.0)
        mix = 0.6 * shared[..., None] + 0.4 * np.stack(channels, -1)
        return low + (high - low) * mix
    grey = rng.uniform(70, 190)
    tint = rng.uniform(-20, 20, 3)
    return grey + tint + 12 * (_pink_noise(rng, size, 2.2)[..., None] - 0.5)


def draw_distractors(rng: np.random.Generator, image: np.ndarray, count: int,
                     supersample: int) -> None:
    """Soft desaturated ellipses (grey/brown/white/black): texture that is no category."""
    size = image.shape[0]
    for _ in range(count):
        radius = size * rng.uniform(0.04, 0.15)
        geometry = Geometry(*rng.uniform(0, size, 2), radius, rng.uniform(0, 2 * math.pi),
                            rng.uniform(0.25, 1.0))
        alpha = soften(coverage("circle", geometry, size, supersample), rng.uniform(0.5, 2.5))
        tone = rng.uniform(20, 235) + np.array([1.0, 0.8, 0.6]) * rng.uniform(0, 30)
        image[:] = image * (1 - alpha[..., None]) + tone * alpha[..., None]


def camera(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """Optics blur, gamma/exposure shift and sensor noise -> [H,W,3] uint8."""
    if rng.random() < 0.7:
        image = ndimage.gaussian_filter(image, (rng.uniform(0.3, 1.1),) * 2 + (0,))
    image = 255.0 * (image.clip(0, 255) / 255.0) ** rng.uniform(0.8, 1.25)
    image = image + rng.normal(0, rng.uniform(2, 9), image.shape)
    return image.clip(0, 255).astype(np.uint8)
