"""Tiny synthetic COCO sets shared by the data tests (generated once per session)."""

from __future__ import annotations

import pytest

from region_sam3.data.synthetic import SyntheticConfig, ensure_synthetic_dataset


def tiny_synthetic_config(**overrides) -> SyntheticConfig:
    splits = {
        "train": {"num_images": 6},
        "val": {"num_images": 4},
        "small": {"num_images": 2},
        "crowded": {"num_images": 2},
    }
    return SyntheticConfig.from_any({"image_size": 64, "seed": 3, "splits": splits, **overrides})


@pytest.fixture(scope="session")
def make_cfg():
    """Factory for tiny synthetic configs with overrides (e.g. seed=4)."""
    return tiny_synthetic_config


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory):
    return tmp_path_factory.mktemp("synthetic")


@pytest.fixture(scope="session")
def tiny_cfg() -> SyntheticConfig:
    return tiny_synthetic_config()


@pytest.fixture(scope="session")
def tiny_val(synthetic_root, tiny_cfg):
    """(image_dir, ann_file) of a 4-image, 64 px synthetic split."""
    return ensure_synthetic_dataset(synthetic_root, "val", tiny_cfg)


def _write_png(path, height: int, width: int, seed: int) -> None:
    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


@pytest.fixture
def coco_files(tmp_path):
    """Small hand-written COCO set: 3 images (40x50), 4 categories, polygon/RLE/crowd annotations.

    Returns (image_dir, ann_file, data dict) and a `rewrite(data)` helper on the dict key.
    """
    import json

    import numpy as np
    from pycocotools import mask as mask_utils

    image_dir = tmp_path / "images"
    image_dir.mkdir()
    images = []
    for image_id in (1, 2, 3):
        name = f"img{image_id}.png"
        _write_png(image_dir / name, 40, 50, image_id)
        images.append({"id": image_id, "file_name": name, "height": 40, "width": 50})
    rle_mask = np.zeros((40, 50), dtype=np.uint8)
    rle_mask[5:15, 20:40] = 1
    rle = mask_utils.encode(np.asfortranarray(rle_mask))
    annotations = [
        # polygon: a 10x10 square at x 2..12, y 3..13
        {
            "id": 11,
            "image_id": 1,
            "category_id": 1,
            "segmentation": [[2, 3, 12, 3, 12, 13, 2, 13]],
            "iscrowd": 0,
        },
        {
            "id": 12,
            "image_id": 1,
            "category_id": 1,
            "segmentation": [[30, 20, 45, 20, 45, 35, 30, 35]],
            "iscrowd": 0,
        },
        {
            "id": 13,
            "image_id": 1,
            "category_id": 2,
            "segmentation": {"size": [40, 50], "counts": rle["counts"].decode()},
            "iscrowd": 0,
        },
        # crowd region of category 3: not an instance and not a negative for image 1
        {
            "id": 14,
            "image_id": 1,
            "category_id": 3,
            "segmentation": {"size": [40, 50], "counts": rle["counts"].decode()},
            "iscrowd": 1,
        },
        {
            "id": 21,
            "image_id": 2,
            "category_id": 4,
            "segmentation": [[0, 0, 20, 0, 20, 20, 0, 20]],
            "iscrowd": 0,
        },
    ]
    categories = [
        {"id": i, "name": n}
        for i, n in [(1, "cat"), (2, "dog"), (3, "person"), (4, "traffic_light")]
    ]
    data = {"images": images, "annotations": annotations, "categories": categories}
    ann_file = tmp_path / "instances.json"
    ann_file.write_text(json.dumps(data))
    return image_dir, ann_file, data
