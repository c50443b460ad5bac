"""Preview of the out-of-distribution splits: a 2x4 grid (top row `ood`, bottom `ood_touching`)
with every visible instance mask outlined (same-category instances share an outline colour, so a
touching group shows as one blob with an internal boundary).

    PYTHONPATH=. python scripts/preview_ood.py [--out results/ood_preview.png] [--size 160]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from region_sam3.data.ood_synthetic import OODConfig, render_ood_scene


def outlined(image: np.ndarray, masks: np.ndarray, category_ids: list[int]) -> np.ndarray:
    """[H,W,3] uint8 with a 1-px outline (inner boundary) around each mask in [K,H,W]."""
    out = image.copy()
    palette = np.random.default_rng(0).integers(60, 256, (64, 3))
    for mask, category_id in zip(masks, category_ids):
        edge = mask & ~ndimage.binary_erosion(mask)
        out[edge] = palette[category_id % len(palette)]
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="results/ood_preview.png")
    parser.add_argument("--size", type=int, default=160, help="image side of each scene")
    args = parser.parse_args(argv)
    cfg = OODConfig(image_size=args.size)
    rows = []
    for split in ("ood", "ood_touching"):
        tiles = []
        for index in range(4):
            scene = render_ood_scene(cfg, split, index)
            tile = outlined(scene.image, scene.masks, scene.category_ids)
            tiles.append(np.pad(tile, ((2, 2), (2, 2), (0, 0)), constant_values=255))
        rows.append(np.concatenate(tiles, 1))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    # 256-colour palette: the sensor noise makes a truecolour PNG ~3x larger
    grid = Image.fromarray(np.concatenate(rows, 0)).quantize(256, dither=Image.Dither.NONE)
    grid.save(args.out, optimize=True)
    print(f"wrote {args.out} ({Path(args.out).stat().st_size / 1024:.0f} KB)")


if __name__ == "__main__":
    main()
