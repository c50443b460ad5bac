"""Out-of-distribution splits (region_sam3/data/ood_synthetic.py): determinism, categories,
annotation integrity, forced touching groups, a renderer that differs from the training one,
and the datamodule wiring (evaluation-only)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from scipy import ndimage

from region_sam3.data.datamodule import FindQueryDataModule
from region_sam3.data.ood_synthetic import (
    OODConfig,
    ensure_ood_dataset,
    render_ood_scene,
    touching_pairs,
)
from region_sam3.data.synthetic import SyntheticConfig, render_scene

SIZE = 64


def _cfg(**splits) -> OODConfig:
    sizes = {"ood": {"num_images": 6}, "ood_touching": {"num_images": 6}, **splits}
    return OODConfig.from_synthetic(SyntheticConfig(image_size=SIZE, seed=3), sizes)


def intermediate_edge_fraction(scenes) -> float:
    """Share of mask-boundary pixels (1 px either side) whose colour lies between the object's
    and its surroundings' (projection in 0.25..0.75 on the segment between the medians of the
    mask eroded by 2 px and a ring 3-4 px outside it). Hard 0/1 fills score near 0."""
    hits = total = 0
    for scene in scenes:
        image, occupied = scene.image.astype(float), scene.masks.any(0)
        for mask in scene.masks:
            inner = ndimage.binary_erosion(mask, iterations=2)
            ring = (ndimage.binary_dilation(mask, iterations=4)
                    & ~ndimage.binary_dilation(mask, iterations=2) & ~occupied)
            if inner.sum() < 10 or ring.sum() < 10:
                continue
            inside, outside = np.median(image[inner], 0), np.median(image[ring], 0)
            step = inside - outside
            if np.linalg.norm(step) < 60:  # low contrast: the projection is noise
                continue
            edge = (mask & ~ndimage.binary_erosion(mask)) | (
                ndimage.binary_dilation(mask) & ~mask & ~occupied)
            t = (image[edge] - outside) @ step / (step @ step)
            hits += int(((t > 0.25) & (t < 0.75)).sum())
            total += int(edge.sum())
    assert total > 500, "too few measurable edges"
    return hits / total


@pytest.mark.parametrize("split", ["ood", "ood_touching"])
def test_scene_deterministic_and_split_streams_differ(split):
    cfg = _cfg()
    first, again = render_ood_scene(cfg, split, 2), render_ood_scene(cfg, split, 2)
    assert np.array_equal(first.image, again.image)
    assert np.array_equal(first.masks, again.masks) and first.category_ids == again.category_ids
    assert not np.array_equal(first.image, render_ood_scene(cfg, split, 3).image)
    other_seed = OODConfig.from_synthetic(SyntheticConfig(image_size=SIZE, seed=4))
    assert not np.array_equal(first.image, render_ood_scene(other_seed, split, 2).image)


def test_written_split_categories_annotations_and_cache(tmp_path):
    cfg = _cfg()
    image_dir, ann_file = ensure_ood_dataset(tmp_path, "ood", cfg)
    data = json.loads(ann_file.read_text())
    assert data["categories"] == SyntheticConfig().categories()
    assert len(data["categories"]) == 30 and data["categories"][0]["name"] == "red circle"
    assert len(data["images"]) == 6 and len(data["annotations"]) >= 6
    for annotation in data["annotations"]:
        mask = mask_utils.decode(annotation["segmentation"]).astype(bool)
        rows, cols = np.nonzero(mask.any(1))[0], np.nonzero(mask.any(0))[0]
        assert mask.sum() >= cfg.min_visible_pixels and annotation["area"] == mask.sum()
        assert annotation["bbox"] == [cols[0], rows[0], cols[-1] - cols[0] + 1,
                                      rows[-1] - rows[0] + 1]
        assert annotation["iscrowd"] == 0 and 1 <= annotation["category_id"] <= 30
    # The files hold exactly the rendered scene; a second call reuses the cache.
    scene = render_ood_scene(cfg, "ood", 0)
    first = [a for a in data["annotations"] if a["image_id"] == 1]
    assert [a["category_id"] for a in first] == scene.category_ids
    mtime = ann_file.stat().st_mtime_ns
    assert ensure_ood_dataset(tmp_path, "ood", cfg) == (image_dir, ann_file)
    assert ann_file.stat().st_mtime_ns == mtime
    # Another spec -> another cache directory; the hash differs from the built-in splits'.
    assert cfg.config_hash("ood") != _cfg(ood={"num_images": 7}).config_hash("ood")
    assert cfg.config_hash("ood").startswith("ood-")
    # `ood_splits` beside the built-in settings leaves the built-in splits' caches alone.
    beside = SyntheticConfig.from_any({"ood_splits": {"ood": {"num_images": 3}}})
    assert beside.config_hash("val") == SyntheticConfig().config_hash("val")


def test_touching_split_has_touching_same_category_instances():
    cfg = _cfg(ood_touching={"num_images": 12})
    for index in range(12):
        scene = render_ood_scene(cfg, "ood_touching", index)
        pairs = touching_pairs(scene)
        assert pairs, f"scene {index}: no touching same-category pair"
        i, j = pairs[0]
        # Measured directly: one mask grown by 1 px (4-neighbourhood) meets the other, and their
        # union is one 4-connected blob.
        grown = ndimage.binary_dilation(scene.masks[i], ndimage.generate_binary_structure(2, 1))
        assert scene.category_ids[i] == scene.category_ids[j] and (grown & scene.masks[j]).any()
        assert ndimage.label(scene.masks[i] | scene.masks[j])[1] <= max(
            ndimage.label(scene.masks[i])[1], ndimage.label(scene.masks[j])[1])
    # The general OOD split does not force them: most of its scenes have none.
    general = [render_ood_scene(cfg, "ood", i) for i in range(12)]
    assert sum(bool(touching_pairs(s)) for s in general) <= 3


def test_renderer_edges_differ_from_the_training_generator():
    """Anti-aliased, soft edges: far more boundary pixels of intermediate colour than the
    training generator's hard fills (measured ~0.6 vs ~0.07 at 64 px)."""
    ood, builtin = _cfg(), SyntheticConfig(image_size=SIZE, seed=3)
    ood_fraction = intermediate_edge_fraction([render_ood_scene(ood, "ood", i) for i in range(20)])
    builtin_fraction = intermediate_edge_fraction([render_scene(builtin, "val", i)
                                                   for i in range(20)])
    assert builtin_fraction < 0.2 and ood_fraction > 0.4 and ood_fraction > 3 * builtin_fraction


def _datamodule(root, **overrides) -> FindQueryDataModule:
    settings = dict(
        synthetic={"root": str(root), "image_size": SIZE, "seed": 3,
                   "splits": {"train": {"num_images": 2}, "val": {"num_images": 2}},
                   "ood_splits": {"ood": {"num_images": 3}, "ood_touching": {"num_images": 3}}},
        resolution=SIZE, batch_size=2, num_workers=0, max_queries_per_image=4,
    )
    return FindQueryDataModule(**{**settings, **overrides})


def test_datamodule_serves_ood_test_splits(tmp_path):
    datamodule = _datamodule(tmp_path, test_split=["ood", "ood_touching"])
    datamodule.prepare_data()
    datamodule.setup("test")
    assert datamodule.test_roles == ["test/ood", "test/ood_touching"]
    assert datamodule.category_names[1] == "red circle" and len(datamodule.category_names) == 30
    loaders = datamodule.test_dataloader()
    assert len(loaders) == 2 and [len(loader.dataset) for loader in loaders] == [3, 3]
    for loader in loaders:
        batch = next(iter(loader))
        assert batch.images.shape[1:] == (3, SIZE, SIZE) and batch.num_queries == 2 * 30
        assert batch.masks.shape[0] == int(batch.num_targets.sum()) > 0
    # The touching split's ground truth has >= 2 instances of one prompt in some image.
    assert int(next(iter(loaders[1])).num_targets.max()) >= 2


def test_datamodule_defaults_without_ood_config_and_refuses_training(tmp_path):
    settings = {"root": str(tmp_path), "image_size": SIZE, "seed": 3,
                "splits": {"train": {"num_images": 2}, "val": {"num_images": 2}}}
    datamodule = FindQueryDataModule(synthetic=settings, test_split="ood", resolution=SIZE,
                                     num_workers=0)
    assert datamodule._ood_config().splits["ood"].num_images == 100  # the default spec
    with pytest.raises(ValueError, match=r"data\.train_split='ood'.*evaluation-only"):
        _datamodule(tmp_path, train_split="ood")
    with pytest.raises(ValueError, match=r"data\.train_split='ood_touching'"):
        _datamodule(tmp_path, train_split="ood_touching")
    with pytest.raises(ValueError, match="ood_splits.ood: .*colour"):
        _datamodule(tmp_path, synthetic={**settings, "ood_splits": {"ood": {"colour": 1}}},
                    test_split="ood").split_paths("ood")


def test_cli_writes_splits(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "region_sam3.data.ood_synthetic", "--out", str(tmp_path),
         "--image-size", "48", "--num-images", "ood=2", "ood_touching=2"],
        capture_output=True, text=True, check=True)
    assert "ood:" in result.stdout and "ood_touching:" in result.stdout
    written = sorted(p.parent.name for p in tmp_path.glob("ood-*/*/instances.json"))
    assert written == ["ood", "ood_touching"]


def test_hydra_data_config_serves_ood_splits(tmp_path):
    """`data=synthetic` with `data.test_split=[test,ood,ood_touching]` and no other config; the
    OOD sizes come from conf/data/synthetic.yaml's `ood_splits`."""
    import hydra
    from helpers import compose_task
    from omegaconf import OmegaConf

    cfg = compose_task("train", tmp_path / "out", tmp_path / "data", [
        "data.test_split=[test,ood,ood_touching]", "data.synthetic.image_size=48",
        "data.synthetic.ood_splits.ood.num_images=2",
        "data.synthetic.ood_splits.ood_touching.num_images=3"])
    OmegaConf.resolve(cfg)
    assert cfg.data.synthetic.ood_splits.ood_touching.num_images == 3
    datamodule = hydra.utils.instantiate(cfg.data)
    assert datamodule.test_roles == ["test/test", "test/ood", "test/ood_touching"]
    image_dir, ann_file = datamodule.split_paths("ood_touching")
    assert len(json.loads(ann_file.read_text())["images"]) == 3
    assert ann_file.parent.parent.parent == tmp_path / "data" / "synthetic"
