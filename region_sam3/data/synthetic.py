"""Built-in synthetic benchmark: procedurally generated shape scenes written as a COCO dataset.

Categories are "<colour> <shape>" noun phrases ("red circle", "blue star", ...). Scenes have
textured backgrounds (gradients, stripes, noise, checkers) and clutter drawn in the same colours
as the objects, so colour thresholding alone does not solve them. Objects occlude each other in
drawing order and the annotations are the *visible* masks.

The dataset is written to `<root>/<split-hash>/<split>/{images/*.png, instances.json}` and goes
through exactly the same reader as COCO. The hash covers the generator settings shared by all
splits plus *that split's* spec only, so adding a split or resizing `train` does not regenerate
the others. A split is generated in a temporary directory and moved
into place with one atomic rename, so concurrent processes (DDP ranks, dataloader workers) never
see a half-written split; the loser of a race discards its copy.

CLI: `python -m region_sam3.data.synthetic --out DIR [--splits train val] [--image-size 224]`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import time
import zlib
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from region_sam3.data.split_cache import ensure_split
from region_sam3.data.synthetic_draw import (
    COLOURS,
    SHAPES,
    background,
    boxes_overlap,
    draw_clutter,
    shape_mask,
)

# Bump when the rendering code changes so cached datasets are regenerated.
GENERATOR_VERSION = 1


@dataclass
class SplitSpec:
    """How one split's scenes are drawn. Sizes are fractions of the image side."""

    num_images: int
    min_objects: int = 1
    max_objects: int = 6
    size_range: tuple[float, float] = (0.08, 0.4)
    small_prob: float = 0.25  # probability an object is drawn from `small_size_range`
    small_size_range: tuple[float, float] = (0.035, 0.12)
    max_overlap: float = 0.3  # max box intersection / smaller box area between objects
    clutter: tuple[int, int] = (2, 8)  # number of distractor strokes/blobs
    # Probability that an object reuses a category already in the scene. Uniform categories
    # give ~1.06 objects per present prompt: a decoder whose queries all predict the same mask
    # then loses nothing, and the tiny base's queries collapsed that way (issue 18). Several
    # instances per prompt are what one-to-one matching needs to learn from.
    same_category_prob: float = 0.0


#: SplitSpec fields that enter `config_hash` only when not at their default (added after
#: caches existed; at the default they draw no random numbers, so the scenes are unchanged).
_HASH_IF_SET = {"same_category_prob": 0.0}

#: held-out test split -> the split whose spec it copies (its scenes come from another random
#: stream: `render_scene` seeds each split with its own name). `val`/`small`/`crowded` select
#: checkpoints and tune; `test`/`test_small`/`test_crowded` report.
TEST_SPLITS = {"test": "val", "test_small": "small", "test_crowded": "crowded"}


def default_splits() -> dict[str, SplitSpec]:
    splits = {
        "train": SplitSpec(num_images=600),
        "val": SplitSpec(num_images=100),
        # At 224 px, 0.035-0.12 of the side is 8-27 px: areas well below the 32² AP_S limit.
        "small": SplitSpec(
            num_images=100, min_objects=3, max_objects=10, small_prob=0.9, max_overlap=0.1
        ),
        "crowded": SplitSpec(
            num_images=100,
            min_objects=12,
            max_objects=24,
            size_range=(0.1, 0.28),
            small_prob=0.1,
            max_overlap=0.7,
        ),
    }
    for test, counterpart in TEST_SPLITS.items():
        splits[test] = replace(splits[counterpart])
    return splits


@dataclass
class SyntheticConfig:
    image_size: int = 224
    seed: int = 0
    shapes: tuple[str, ...] = SHAPES
    colours: tuple[str, ...] = tuple(COLOURS)
    splits: dict[str, SplitSpec] = field(default_factory=default_splits)
    min_visible_pixels: int = 4  # objects occluded below this are dropped from annotations
    pixel_noise_std: float = 6.0

    def __post_init__(self) -> None:
        self.shapes = tuple(self.shapes)
        self.colours = tuple(self.colours)
        unknown = [s for s in self.shapes if s not in SHAPES] + [
            c for c in self.colours if c not in COLOURS
        ]
        if unknown:
            raise ValueError(f"synthetic config: unknown shapes/colours {unknown}")
        self.splits = {
            name: spec if isinstance(spec, SplitSpec) else SplitSpec(**spec)
            for name, spec in dict(self.splits).items()
        }
        for spec in self.splits.values():
            spec.size_range = tuple(spec.size_range)
            spec.small_size_range = tuple(spec.small_size_range)
            spec.clutter = tuple(spec.clutter)

    @classmethod
    def from_any(cls, cfg: SyntheticConfig | dict[str, Any] | None) -> SyntheticConfig:
        if cfg is None:
            return cls()
        if isinstance(cfg, SyntheticConfig):
            return cfg
        cfg = dict(cfg)
        # The OOD generator's split sizes live beside these settings in `data.synthetic`
        # (region_sam3.data.ood_synthetic); they are no field of this config or its hash.
        cfg.pop("ood_splits", None)
        if "splits" in cfg and cfg["splits"] is not None:
            # Partial split overrides (e.g. only num_images) start from the default spec.
            merged = default_splits()
            for name, spec in dict(cfg["splits"]).items():
                base = asdict(merged[name]) if name in merged else {}
                merged[name] = SplitSpec(**{**base, **dict(spec)})
            cfg["splits"] = merged
        return cls(**{k: v for k, v in cfg.items() if v is not None})

    def categories(self) -> list[dict[str, Any]]:
        return [
            {"id": i + 1, "name": f"{colour} {shape}", "supercategory": shape}
            for i, (colour, shape) in enumerate((c, s) for s in self.shapes for c in self.colours)
        ]

    def split_config(self, split: str) -> dict[str, Any]:
        """Everything that determines `split`'s pixels and annotations (and nothing else)."""
        settings = {k: v for k, v in asdict(self).items() if k != "splits"}
        spec = asdict(self.splits[split])
        # Spec fields added later hash only when set, so existing caches keep their keys.
        for name, default in _HASH_IF_SET.items():
            if spec.get(name) == default:
                spec.pop(name)
        return {"version": GENERATOR_VERSION, **settings, "split": split, "spec": spec}

    def config_hash(self, split: str) -> str:
        """Cache key of one split: shared generator settings + that split's spec only."""
        payload = json.dumps(self.split_config(split), sort_keys=True, default=list)
        return hashlib.sha1(payload.encode()).hexdigest()[:12]


@dataclass
class SyntheticScene:
    image: np.ndarray  # [H,W,3] uint8
    category_ids: list[int]  # [K]
    masks: np.ndarray  # [K,H,W] bool, visible part of each object


def render_scene(cfg: SyntheticConfig, split: str, index: int) -> SyntheticScene:
    """Deterministically draw scene `index` of `split` (same inputs -> identical pixels)."""
    spec = cfg.splits[split]
    size = cfg.image_size
    # The split name is part of the seed: splits with equal specs (val / test) differ.
    rng = np.random.default_rng([cfg.seed, zlib.crc32(split.encode()), index])
    image = background(rng, size)
    draw_clutter(rng, image, int(rng.integers(spec.clutter[0], spec.clutter[1] + 1)))

    categories = [(c, s) for s in cfg.shapes for c in cfg.colours]
    owner = np.full((size, size), -1, dtype=np.int32)
    object_categories: list[int] = []
    placed_boxes: list[np.ndarray] = []
    yy, xx = np.mgrid[0:size, 0:size]
    for _ in range(int(rng.integers(spec.min_objects, spec.max_objects + 1))):
        if (spec.same_category_prob and object_categories
                and rng.random() < spec.same_category_prob):
            category_index = object_categories[int(rng.integers(len(object_categories)))] - 1
        else:
            category_index = int(rng.integers(len(categories)))
        colour_name, shape = categories[category_index]
        low, high = spec.small_size_range if rng.random() < spec.small_prob else spec.size_range
        diameter = size * math.exp(rng.uniform(math.log(low), math.log(high)))
        if shape == "ring":
            diameter = max(diameter, 10.0)  # thinner rings close up into discs
        radius = diameter / 2
        for _attempt in range(20):
            cx, cy = rng.uniform(radius, size - radius, 2)
            box = np.array([cx - radius, cy - radius, cx + radius, cy + radius])
            if boxes_overlap(box, placed_boxes) <= spec.max_overlap:
                break
        else:
            continue
        mask = shape_mask(shape, size, cx, cy, radius, rng.uniform(0, 2 * math.pi))
        if not mask.any():
            continue
        base = np.array(COLOURS[colour_name], dtype=np.float64) + rng.uniform(-25, 25, 3)
        # A soft linear shading across the object keeps it from being one flat colour.
        direction = rng.uniform(0, 2 * math.pi)
        shading = 1 + 0.15 * (
            (xx - cx) * math.cos(direction) + (yy - cy) * math.sin(direction)
        ) / max(radius, 1)
        image[mask] = base * shading[mask][:, None]
        owner[mask] = len(object_categories)
        object_categories.append(category_index + 1)
        placed_boxes.append(box)

    image += rng.normal(0, cfg.pixel_noise_std, image.shape)
    keep = [
        i for i in range(len(object_categories)) if (owner == i).sum() >= cfg.min_visible_pixels
    ]
    masks = np.stack([owner == i for i in keep]) if keep else np.zeros((0, size, size), bool)
    return SyntheticScene(
        image=image.clip(0, 255).astype(np.uint8),
        category_ids=[object_categories[i] for i in keep],
        masks=masks,
    )


def mask_annotation(mask: np.ndarray, annotation_id: int, image_id: int, category_id: int) -> dict:
    """COCO annotation of one `[H,W]` bool instance mask: compressed RLE, area, pixel-extent
    xywh box; shared by every generator of this project (synthetic, ood_synthetic)."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rows, cols = np.nonzero(mask.any(1))[0], np.nonzero(mask.any(0))[0]
    return {
        "id": annotation_id,
        "image_id": image_id,
        "category_id": category_id,
        "segmentation": {"size": list(rle["size"]), "counts": rle["counts"].decode("ascii")},
        "area": int(mask.sum()),
        # Pixel-extent box: a mask spanning columns x0..x1 has width x1 - x0 + 1.
        "bbox": [
            float(cols[0]),
            float(rows[0]),
            float(cols[-1] - cols[0] + 1),
            float(rows[-1] - rows[0] + 1),
        ],
        "iscrowd": 0,
    }


def write_split(cfg: SyntheticConfig, split: str, out_dir: Path) -> None:
    """Render every scene of `split` into `out_dir/images/*.png` + `out_dir/instances.json`."""
    image_dir = out_dir / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for index in range(cfg.splits[split].num_images):
        scene = render_scene(cfg, split, index)
        image_id = index + 1
        file_name = f"{split}_{image_id:06d}.png"
        Image.fromarray(scene.image).save(image_dir / file_name, compress_level=1)
        images.append(
            {
                "id": image_id,
                "file_name": file_name,
                "height": cfg.image_size,
                "width": cfg.image_size,
            }
        )
        for mask, category_id in zip(scene.masks, scene.category_ids):
            annotations.append(mask_annotation(mask, len(annotations) + 1, image_id, category_id))
    dataset = {
        "info": {
            "description": f"region_sam3 synthetic shapes, split {split}",
            "config": cfg.split_config(split),
        },
        "images": images,
        "annotations": annotations,
        "categories": cfg.categories(),
    }
    with open(out_dir / "instances.json", "w") as f:
        json.dump(dataset, f, default=list)


def ensure_synthetic_dataset(
    root: str | os.PathLike, split: str, cfg: SyntheticConfig | dict | None = None
) -> tuple[Path, Path]:
    """Return (image_dir, ann_json) of `split`, generating it once per generator config.

    Output lives in `<root>/<split-hash>/<split>/` (see `SyntheticConfig.config_hash`);
    concurrent callers are safe (temp dir + atomic rename).
    """
    cfg = SyntheticConfig.from_any(cfg)
    if split not in cfg.splits:
        raise ValueError(f"synthetic dataset: unknown split {split!r}; known: {sorted(cfg.splits)}")
    return ensure_split(Path(root) / cfg.config_hash(split), split,
                        lambda tmp: write_split(cfg, split, tmp), cfg.split_config(split))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="cache root; data goes to OUT/<hash>/<split>")
    parser.add_argument("--splits", nargs="+", default=None, help="default: all configured splits")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--num-images", nargs="*", default=[], metavar="SPLIT=N", help="e.g. train=50 val=10"
    )
    args = parser.parse_args(argv)
    overrides = {}
    for item in args.num_images:
        name, _, count = item.partition("=")
        overrides[name] = {"num_images": int(count)}
    cfg = SyntheticConfig.from_any(
        {"image_size": args.image_size, "seed": args.seed, "splits": overrides or None}
    )
    for split in args.splits or list(cfg.splits):
        start = time.perf_counter()
        image_dir, ann_file = ensure_synthetic_dataset(args.out, split, cfg)
        print(f"{split}: {ann_file} ({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    main()
