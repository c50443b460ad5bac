import hashlib
import json

import numpy as np
import pytest

from region_sam3.data.coco import FindQueryDataset
from region_sam3.data.synthetic import (
    TEST_SPLITS,
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
    assert make_cfg(seed=9).config_hash("val") != tiny_cfg.config_hash("val")
    assert not list(ann_file.parent.parent.glob(".tmp-*"))


def test_cache_key_covers_only_its_own_split(make_cfg, tiny_cfg):
    """Adding a split or resizing `train` keeps the cached val data; val's own spec does not."""
    bigger_train = make_cfg(splits={"train": {"num_images": 60}, "val": {"num_images": 4}})
    assert bigger_train.config_hash("val") == tiny_cfg.config_hash("val")
    assert bigger_train.config_hash("train") != tiny_cfg.config_hash("train")
    assert make_cfg(splits={"val": {"num_images": 5}}).config_hash("val") != tiny_cfg.config_hash(
        "val")
    # equal specs, different splits -> different data, different keys
    assert tiny_cfg.config_hash("test") != tiny_cfg.config_hash("val")


def test_held_out_splits_copy_their_counterparts_spec():
    splits = SyntheticConfig().splits
    assert TEST_SPLITS == {"test": "val", "test_small": "small", "test_crowded": "crowded"}
    for test, counterpart in TEST_SPLITS.items():
        assert splits[test] == splits[counterpart]
        assert splits[test] is not splits[counterpart]
    # a partial override (num_images only) keeps the counterpart's spec
    cfg = SyntheticConfig.from_any({"splits": {"test_small": {"num_images": 3}}})
    assert cfg.splits["test_small"].num_images == 3
    assert cfg.splits["test_small"].small_prob == splits["small"].small_prob == 0.9


@pytest.mark.parametrize("test_split", sorted(TEST_SPLITS))
def test_held_out_splits_share_no_image_with_their_counterpart(make_cfg, test_split):
    cfg = make_cfg(splits={test_split: {"num_images": 12}, TEST_SPLITS[test_split]: {
        "num_images": 12}})
    digest = lambda split, i: hashlib.sha1(render_scene(cfg, split, i).image.tobytes()).hexdigest()  # noqa: E731
    held_out = {digest(test_split, i) for i in range(12)}
    selecting = {digest(TEST_SPLITS[test_split], i) for i in range(12)}
    assert len(held_out) == len(selecting) == 12
    assert not held_out & selecting


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


def test_same_category_prob_gives_several_instances_per_prompt_and_leaves_defaults_alone():
    # The default spec's cache key predates the field (a changed key would regenerate caches).
    assert SyntheticConfig().config_hash("val") == "53ba09c7cdc0"

    def objects_per_present_prompt(cfg: SyntheticConfig) -> float:
        scenes = [render_scene(cfg, "train", i) for i in range(60)]
        return (sum(len(s.category_ids) for s in scenes)
                / sum(len(set(s.category_ids)) for s in scenes))

    plain = SyntheticConfig.from_any({"splits": {"train": {"num_images": 60}}})
    repeated = SyntheticConfig.from_any(
        {"splits": {"train": {"num_images": 60, "same_category_prob": 0.5}}})
    assert objects_per_present_prompt(plain) < 1.1
    assert objects_per_present_prompt(repeated) > 1.4
    assert repeated.config_hash("train") != plain.config_hash("train")
