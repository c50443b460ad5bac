"""Out-of-distribution evaluation splits: the benchmark's 30 categories drawn by other code.

`ood` holds general scenes (1-6 objects, like `val`); `ood_touching` holds scenes where >= 1
group of SAME-category instances touch or overlap slightly, so the union of that category's
masks is one connected blob: the case an iterative refinement loop claims to separate. The
renderer (:mod:`region_sam3.data.ood_draw`) shares no drawing code with the training
generator; the category names and ids are `SyntheticConfig.categories()`'s, so a trained
model's prompts apply. Ground truth: each object's coverage (after its soft edge) thresholded at
0.5, later objects occluding earlier ones, i.e. the *visible* masks; `iscrowd` 0.

These splits are evaluation-only (`FindQueryDataModule` refuses them as `train_split`). They are
written like the built-in splits to `<root>/<hash>/<split>/{images, instances.json}`, the hash
covering this generator's version and settings + that split's spec, generated in a temporary
directory and renamed into place atomically.

CLI: `python -m region_sam3.data.ood_synthetic --out DIR [--splits ood ood_touching]`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import time
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage

from region_sam3.data.ood_draw import (
    Geometry,
    camera,
    coverage,
    draw_distractors,
    lit_colour,
    ood_background,
    random_geometry,
    soften,
)
from region_sam3.data.split_cache import ensure_split
from region_sam3.data.synthetic import SyntheticConfig, SyntheticScene, mask_annotation
from region_sam3.data.synthetic_draw import COLOURS

# Bump when the OOD rendering code changes so cached datasets are regenerated.
OOD_GENERATOR_VERSION = 1


@dataclass
class OODSpec:
    """How one OOD split's scenes are drawn. Sizes are fractions of the image side."""

    num_images: int
    min_objects: int = 1
    max_objects: int = 6
    size_range: tuple[float, float] = (0.07, 0.4)  # diameter, uniform (training: log-uniform)
    max_overlap: float = 0.2  # max box intersection / smaller box for objects not in a group
    distractors: tuple[int, int] = (0, 3)
    # Touching same-category groups per image and members per group (0 groups: none forced).
    touching_groups: tuple[int, int] = (0, 0)
    group_size: tuple[int, int] = (2, 3)
    touch_overlap: tuple[float, float] = (0.5, 2.5)  # px the full masks overlap at the contact
    edge_softness: tuple[float, float] = (0.0, 1.2)  # per-object coverage blur sigma, px


def default_ood_splits() -> dict[str, OODSpec]:
    return {
        "ood": OODSpec(num_images=100),
        "ood_touching": OODSpec(num_images=100, min_objects=2, max_objects=7,
                                touching_groups=(1, 2)),
    }


#: Names of the OOD splits known without any config (the datamodule refuses them for training).
OOD_SPLITS = tuple(default_ood_splits())


@dataclass
class OODConfig:
    image_size: int = 224
    seed: int = 0
    categories: list[dict[str, Any]] = field(default_factory=lambda: SyntheticConfig().categories())
    splits: dict[str, OODSpec] = field(default_factory=default_ood_splits)
    min_visible_pixels: int = 8  # objects occluded below this are dropped from annotations
    supersample: int = 4  # sub-samples per pixel side of the coverage

    def __post_init__(self) -> None:
        for spec in self.splits.values():
            for name in ("size_range", "distractors", "touching_groups", "group_size",
                         "touch_overlap", "edge_softness"):
                setattr(spec, name, tuple(getattr(spec, name)))

    @classmethod
    def from_synthetic(cls, synthetic: SyntheticConfig,
                       splits: dict[str, Any] | None = None) -> OODConfig:
        """The OOD generator of a built-in benchmark config: its image size, seed and categories;
        `splits` are partial overrides (e.g. `{ood: {num_images: 20}}`) of the default specs."""
        merged = default_ood_splits()
        for name, spec in dict(splits or {}).items():
            base = asdict(merged[name]) if name in merged else {}
            try:
                merged[name] = OODSpec(**{**base, **dict(spec or {})})
            except TypeError as error:
                raise ValueError(f"data.synthetic.ood_splits.{name}: {error}") from None
        return cls(image_size=synthetic.image_size, seed=synthetic.seed,
                   categories=synthetic.categories(), splits=merged)

    def split_config(self, split: str) -> dict[str, Any]:
        settings = {k: v for k, v in asdict(self).items() if k not in ("splits", "categories")}
        return {"generator": "ood", "version": OOD_GENERATOR_VERSION, **settings,
                "categories": [c["name"] for c in self.categories], "split": split,
                "spec": asdict(self.splits[split])}

    def config_hash(self, split: str) -> str:
        payload = json.dumps(self.split_config(split), sort_keys=True, default=list)
        return "ood-" + hashlib.sha1(payload.encode()).hexdigest()[:12]


def _overlap(box: np.ndarray, others: list[np.ndarray]) -> float:
    """Max over `others` of box intersection / smaller box area (x0, y0, x1, y1)."""
    worst = 0.0
    for other in others:
        w = min(box[2], other[2]) - max(box[0], other[0])
        h = min(box[3], other[3]) - max(box[1], other[1])
        if w > 0 and h > 0:
            worst = max(worst, w * h / min(np.prod(box[2:] - box[:2]),
                                           np.prod(other[2:] - other[:2])))
    return worst


def _touching_member(rng: np.random.Generator, cfg: OODConfig, spec: OODSpec, shape: str,
                     group_mask: np.ndarray, anchor: Geometry, radius: float) -> Geometry | None:
    """Geometry of a new instance that touches `group_mask` (overlapping it by
    `spec.touch_overlap` px) on a random side of `anchor`; None if it would leave the image."""
    size = cfg.image_size
    for _attempt in range(10):
        geometry = random_geometry(rng, shape, 0.0, 0.0, radius)
        theta = rng.uniform(0, 2 * math.pi)

        def at(distance: float, g: Geometry = geometry, t: float = theta) -> Geometry:
            return Geometry(anchor.cx + distance * math.cos(t), anchor.cy + distance * math.sin(t),
                            g.radius, g.angle, g.aspect, g.params)

        # Bisect the centre distance at which the two masks stop overlapping (disjoint beyond
        # the sum of the circumscribed radii); then step back into a slight overlap.
        near, far = 0.0, anchor.radius + radius + 1.0
        for _ in range(9):
            mid = (near + far) / 2
            hit = (coverage(shape, at(mid), size, 2) >= 0.5) & group_mask
            near, far = (mid, far) if hit.any() else (near, mid)
        placed = at(max(far - rng.uniform(*spec.touch_overlap), 0.0))
        if radius <= placed.cx <= size - radius and radius <= placed.cy <= size - radius:
            return placed
    return None


def _layout(rng: np.random.Generator, cfg: OODConfig,
            spec: OODSpec) -> list[tuple[int, Geometry]]:
    """(category index, geometry) of every object: touching groups first, then singles."""
    size, names = cfg.image_size, [c["name"] for c in cfg.categories]
    total = int(rng.integers(spec.min_objects, spec.max_objects + 1))
    objects: list[tuple[int, Geometry]] = []

    def radius() -> float:
        return size * rng.uniform(*spec.size_range) / 2

    for _ in range(int(rng.integers(spec.touching_groups[0], spec.touching_groups[1] + 1))):
        category = int(rng.integers(len(names)))
        shape = names[category].split(" ", 1)[1]
        r = radius()
        for _try in range(20):
            anchor = random_geometry(rng, shape, *rng.uniform(r, size - r, 2), r)
            if _overlap(anchor.box(), [g.box() for _, g in objects]) <= spec.max_overlap:
                break
        group = [anchor]
        mask = coverage(shape, anchor, size, 2) >= 0.5
        for _member in range(int(rng.integers(spec.group_size[0], spec.group_size[1] + 1)) - 1):
            member = _touching_member(rng, cfg, spec, shape, mask, group[-1], radius())
            if member is not None:
                group.append(member)
                mask |= coverage(shape, member, size, 2) >= 0.5
        objects += [(category, g) for g in group]
    for _ in range(max(total - len(objects), 0)):
        category = int(rng.integers(len(names)))
        r = radius()
        for _try in range(20):
            geometry = random_geometry(rng, names[category].split(" ", 1)[1],
                                       *rng.uniform(r, size - r, 2), r)
            if _overlap(geometry.box(), [g.box() for _, g in objects]) <= spec.max_overlap:
                objects.append((category, geometry))
                break
    return objects


def _draw(rng: np.random.Generator, cfg: OODConfig, spec: OODSpec) -> SyntheticScene:
    size = cfg.image_size
    image = ood_background(rng, size)
    draw_distractors(rng, image, int(rng.integers(spec.distractors[0], spec.distractors[1] + 1)),
                     cfg.supersample)
    objects = _layout(rng, cfg, spec)
    owner = np.full((size, size), -1, dtype=np.int32)
    for k in rng.permutation(len(objects)):  # drawing order: who occludes whom
        category, geometry = objects[k]
        colour_name, shape = cfg.categories[category]["name"].split(" ", 1)
        alpha = soften(coverage(shape, geometry, size, cfg.supersample),
                       rng.uniform(*spec.edge_softness))
        colour = lit_colour(rng, COLOURS[colour_name], geometry, size)
        image = image * (1 - alpha[..., None]) + colour * alpha[..., None]
        owner[alpha >= 0.5] = k
    keep = [k for k in range(len(objects)) if (owner == k).sum() >= cfg.min_visible_pixels]
    masks = np.stack([owner == k for k in keep]) if keep else np.zeros((0, size, size), bool)
    return SyntheticScene(image=camera(rng, image),
                          category_ids=[cfg.categories[objects[k][0]]["id"] for k in keep],
                          masks=masks)


def touching_pairs(scene: SyntheticScene) -> list[tuple[int, int]]:
    """Pairs (i, j), i < j, of same-category instances whose visible masks overlap or are
    4-connected neighbours (one mask dilated by 1 px meets the other)."""
    cross = ndimage.generate_binary_structure(2, 1)
    pairs = []
    for i in range(len(scene.category_ids)):
        grown = ndimage.binary_dilation(scene.masks[i], cross)
        for j in range(i + 1, len(scene.category_ids)):
            if scene.category_ids[i] == scene.category_ids[j] and (grown & scene.masks[j]).any():
                pairs.append((i, j))
    return pairs


def render_ood_scene(cfg: OODConfig, split: str, index: int) -> SyntheticScene:
    """Deterministically draw scene `index` of OOD `split` (same inputs -> identical pixels).
    Splits that force touching groups redraw (from the same random stream) until the visible
    masks still touch after occlusion by the other objects."""
    spec = cfg.splits[split]
    rng = np.random.default_rng([cfg.seed, zlib.crc32(f"ood/{split}".encode()), index])
    scene = _draw(rng, cfg, spec)
    for _attempt in range(20):
        if spec.touching_groups[0] == 0 or touching_pairs(scene):
            return scene
        scene = _draw(rng, cfg, spec)
    raise RuntimeError(f"ood split {split!r}: scene {index} has no touching same-category "
                       f"instances after 20 draws; check its spec {spec}")


def write_ood_split(cfg: OODConfig, split: str, out_dir: Path) -> None:
    """Render every scene of `split` into `out_dir/images/*.png` + `out_dir/instances.json`."""
    image_dir = out_dir / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for index in range(cfg.splits[split].num_images):
        scene = render_ood_scene(cfg, split, index)
        image_id, file_name = index + 1, f"{split}_{index + 1:06d}.png"
        Image.fromarray(scene.image).save(image_dir / file_name, compress_level=1)
        images.append({"id": image_id, "file_name": file_name,
                       "height": cfg.image_size, "width": cfg.image_size})
        for mask, category_id in zip(scene.masks, scene.category_ids):
            annotations.append(mask_annotation(mask, len(annotations) + 1, image_id, category_id))
    dataset = {
        "info": {"description": f"region_sam3 out-of-distribution shapes, split {split}",
                 "config": cfg.split_config(split)},
        "images": images,
        "annotations": annotations,
        "categories": cfg.categories,
    }
    with open(out_dir / "instances.json", "w") as f:
        json.dump(dataset, f, default=list)


def ensure_ood_dataset(root: str | os.PathLike, split: str, cfg: OODConfig) -> tuple[Path, Path]:
    """Return (image_dir, ann_json) of OOD `split`, generating it once per generator config in
    `<root>/<hash>/<split>/` (temp dir + atomic rename: concurrent callers are safe)."""
    if split not in cfg.splits:
        raise ValueError(f"ood dataset: unknown split {split!r}; known: {sorted(cfg.splits)}")
    return ensure_split(Path(root) / cfg.config_hash(split), split,
                        lambda tmp: write_ood_split(cfg, split, tmp), cfg.split_config(split))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="cache root; data goes to OUT/<hash>/<split>")
    parser.add_argument("--splits", nargs="+", default=list(OOD_SPLITS))
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-images", nargs="*", default=[], metavar="SPLIT=N",
                        help="e.g. ood=20 ood_touching=20")
    args = parser.parse_args(argv)
    overrides = {}
    for item in args.num_images:
        name, _, count = item.partition("=")
        overrides[name] = {"num_images": int(count)}
    cfg = OODConfig.from_synthetic(
        SyntheticConfig(image_size=args.image_size, seed=args.seed), overrides)
    for split in args.splits:
        start = time.perf_counter()
        _, ann_file = ensure_ood_dataset(args.out, split, cfg)
        print(f"{split}: {ann_file} ({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    main()
