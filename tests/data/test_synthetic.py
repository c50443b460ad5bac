import json

import numpy as np
import pytest

from region_sam3.data.coco import FindQueryDataset
from region_sam3.data.synthetic import (
    SyntheticConfig,
    ensure_synthetic_dataset,
    main,
    render_scene,
)


def test_render_is_deterministic_and_seed_dependent(tiny_cfg, make_cfg):
    a, b = render_scene(tiny_cfg, "val", 1), render_scene(tiny_cfg, "val", 1)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.masks, b.masks)
    other = render_scene(make_cfg(seed=4), "val", 1)
    assert not np.array_equal(a.image, other.image)


def test_visible_masks_do_not_overlap(tiny_cfg):
    scene = render_scene(tiny_cfg, "crowded", 0)
    assert len(scene.category_ids) >= 5
    assert scene.masks.sum(0).max() == 1  # occlusion: every pixel belongs to one object at most


def test_scene_roundtrips_through_coco_reader(tiny_cfg, tiny_val):
    image_dir, ann_file = tiny_val
    dataset = FindQueryDataset(image_dir, ann_file, all_categories=True)
    names = {c["id"]: c["name"] for c in tiny_cfg.categories()}
    coco = json.loads(ann_file.read_text())
    checked = 0
    for index in range(len(dataset)):
        scene = render_scene(tiny_cfg, "val", index)
        sample = dataset[index]
        assert sample.image_id == index + 1
        # image read back from PNG equals the generated pixels (normalised by 0.5/0.5)
        restored = ((sample.image + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
        assert np.array_equal(restored, scene.image)
        anns = [a for a in coco["annotations"] if a["image_id"] == sample.image_id]
        assert len(anns) == len(scene.masks) == sample.masks.shape[0]
        for q, rows in enumerate(sample.target_rows):
            assert sample.prompts[q] == names[sample.category_ids[q]]
            expected = [k for k, c in enumerate(scene.category_ids) if c == sample.category_ids[q]]
            assert len(rows) == len(expected)
            for row, k in zip(rows, expected):
                assert np.array_equal(sample.masks[row].numpy(), scene.masks[k])
                ann = next(a for a in anns if a["id"] == int(sample.annotation_ids[row]))
                assert ann["area"] == scene.masks[k].sum()
                ys, xs = np.nonzero(scene.masks[k])
                assert ann["bbox"] == [
                    xs.min(),
                    ys.min(),
                    xs.max() - xs.min() + 1,
                    ys.max() - ys.min() + 1,
                ]
                checked += 1
    assert checked > 0


def test_small_split_has_small_objects(synthetic_root, tiny_cfg):
    _, ann_file = ensure_synthetic_dataset(synthetic_root, "small", tiny_cfg)
    areas = [a["area"] for a in json.loads(ann_file.read_text())["annotations"]]
    # 64 px images scale the 224 px sizes down; at 224 px the same fractions stay below 32^2.
    assert areas and np.mean(np.array(areas) < 32**2) > 0.8


def test_cache_reused_and_keyed_by_config(synthetic_root, tiny_cfg, tiny_val, make_cfg):
    image_dir, ann_file = tiny_val
    stamp = ann_file.stat().st_mtime_ns
    assert ensure_synthetic_dataset(synthetic_root, "val", tiny_cfg)[1].stat().st_mtime_ns == stamp
    assert make_cfg(seed=9).config_hash() != tiny_cfg.config_hash()
    assert not list(ann_file.parent.parent.glob(".tmp-*"))


def test_unknown_split_and_shape_rejected(tmp_path, make_cfg):
    with pytest.raises(ValueError, match="unknown split 'nope'"):
        ensure_synthetic_dataset(tmp_path, "nope", make_cfg())
    with pytest.raises(ValueError, match="hexagon"):
        SyntheticConfig(shapes=("hexagon",))


def test_cli_writes_requested_split(tmp_path, capsys):
    main(["--out", str(tmp_path), "--splits", "val", "--image-size", "48", "--num-images", "val=2"])
    ann_files = list(tmp_path.glob("*/val/instances.json"))
    assert len(ann_files) == 1
    assert len(json.loads(ann_files[0].read_text())["images"]) == 2
