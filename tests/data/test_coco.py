import json

import numpy as np
import pytest

from region_sam3.data.coco import FindQueryDataset
from region_sam3.data.issues import DataIssueError


def test_eval_annotations_keep_crowd_regions_in_the_original_frame(coco_files):
    from region_sam3.data.batch import collate_find_queries
    from region_sam3.data.transforms import FindQueryTransform

    image_dir, ann_file, _ = coco_files
    dataset = FindQueryDataset(image_dir, ann_file, all_categories=True, eval_annotations=True,
                               transform=FindQueryTransform(resolution=32))
    sample = dataset[0]
    anns = {a["id"]: a for a in sample.gt_annotations}
    assert sorted(anns) == [11, 12, 13, 14] and anns[14]["iscrowd"] == 1  # crowd reaches eval
    assert all(a["segmentation"]["size"] == [40, 50] for a in anns.values())  # not 32x32
    assert sample.masks.shape[-2:] == (32, 32)
    assert collate_find_queries([sample, dataset[1]]).gt_annotations[0] == sample.gt_annotations
    assert FindQueryDataset(image_dir, ann_file)[0].gt_annotations is None  # training: off


def _rewrite(ann_file, data):
    ann_file.write_text(json.dumps(data))


def test_positives_crowd_and_names(coco_files):
    image_dir, ann_file, _ = coco_files
    dataset = FindQueryDataset(image_dir, ann_file, all_categories=True)
    assert dataset.category_names[4] == "traffic light"  # LVIS-style underscores become spaces
    sample = dataset[0]
    assert sample.category_ids[:2] == [1, 2]  # positives first
    assert 3 not in sample.category_ids  # crowd-only category: neither positive nor negative
    assert sample.category_ids[2:] == [4]
    assert [len(r) for r in sample.target_rows] == [2, 1, 0]
    assert sample.masks.shape == (3, 40, 50)
    assert sorted(sample.annotation_ids.tolist()) == [11, 12, 13]  # crowd 14 never a target
    square = sample.masks[sample.target_rows[0][0]]
    assert square.sum() > 80 and not square[20:].any()
    rle_row = sample.target_rows[1][0]
    assert sample.masks[rle_row].sum() == 200 and sample.masks[rle_row][5:15, 20:40].all()


def test_image_without_annotations_yields_only_negatives(coco_files):
    image_dir, ann_file, _ = coco_files
    sample = FindQueryDataset(image_dir, ann_file, negative_ratio=2.0)[2]
    assert len(sample.category_ids) == 2
    assert all(rows == [] for rows in sample.target_rows)
    assert sample.masks.shape == (0, 40, 50) and sample.boxes_cxcywh.shape == (0, 4)


@pytest.mark.parametrize("ratio", [0.0, 0.5, 1.0, 3.0])
def test_negative_ratio_holds(synthetic_root, tiny_cfg, ratio):
    from region_sam3.data.synthetic import ensure_synthetic_dataset

    image_dir, ann_file = ensure_synthetic_dataset(synthetic_root, "train", tiny_cfg)
    dataset = FindQueryDataset(image_dir, ann_file, negative_ratio=ratio, seed=1)
    positives = negatives = 0
    for _ in range(3 if ratio == 0.5 else 1):
        for index in range(len(dataset)):
            record = dataset.records[index]
            pos, neg = dataset.select_queries(record, np.random.default_rng([_, index]))
            present = {a["category_id"] for a in record.annotations}
            assert set(pos) == present and not set(neg) & present
            positives, negatives = positives + len(pos), negatives + len(neg)
    assert positives > 0
    if ratio == 0.5:
        assert abs(negatives / positives - ratio) < 0.2  # stochastic rounding: ratio in expectation
    else:
        assert negatives == ratio * positives


def test_sampling_is_deterministic_by_seed(coco_files):
    image_dir, ann_file, _ = coco_files
    a = FindQueryDataset(image_dir, ann_file, negative_ratio=1.0, seed=5)
    b = FindQueryDataset(image_dir, ann_file, negative_ratio=1.0, seed=5)
    assert [a[i].category_ids for i in range(3)] == [b[i].category_ids for i in range(3)]


def test_max_queries_cap_keeps_both_kinds(coco_files):
    image_dir, ann_file, _ = coco_files
    sample = FindQueryDataset(image_dir, ann_file, all_categories=True, max_queries_per_image=2)[0]
    assert len(sample.category_ids) == 2
    assert sum(1 for rows in sample.target_rows if rows) == 1


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.pop("annotations"), "missing key 'annotations'"),
        (lambda d: d["images"][1].pop("file_name"), r"images\[1\]: missing key 'file_name'"),
        (lambda d: d["categories"][0].pop("name"), r"categories\[0\]: missing key 'name'"),
        (lambda d: d.update(images={"a": 1}), "key 'images' must be a list"),
    ],
)
def test_not_coco_json_raises_naming_file_and_field(coco_files, mutate, message):
    image_dir, ann_file, data = coco_files
    mutate(data)
    _rewrite(ann_file, data)
    with pytest.raises(ValueError, match=message) as info:
        FindQueryDataset(image_dir, ann_file)
    assert str(ann_file) in str(info.value)


def test_invalid_json_and_missing_file(coco_files, tmp_path):
    image_dir, ann_file, _ = coco_files
    ann_file.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        FindQueryDataset(image_dir, ann_file)
    with pytest.raises(FileNotFoundError, match="nope.json"):
        FindQueryDataset(image_dir, tmp_path / "nope.json")


def _bad_annotations(data):
    data["annotations"] += [
        {"id": 90, "image_id": 2, "category_id": 99, "segmentation": [[0, 0, 5, 0, 5, 5]]},
        {"id": 91, "image_id": 2, "category_id": 1, "segmentation": [[0, 0, 5]]},
        {"id": 92, "image_id": 2, "category_id": 1, "segmentation": [[0, 0, 0, 0, 0, 0]]},
        {"id": 93, "image_id": 2, "category_id": 1},
        {"id": 94, "image_id": 77, "category_id": 1, "segmentation": [[0, 0, 5, 0, 5, 5]]},
        {
            "id": 95,
            "image_id": 2,
            "category_id": 2,
            "segmentation": {"size": [10, 10], "counts": "00"},
        },
    ]


def test_bad_annotations_skipped_and_counted(coco_files, caplog):
    image_dir, ann_file, data = coco_files
    _bad_annotations(data)
    (image_dir / "img3.png").unlink()
    _rewrite(ann_file, data)
    with caplog.at_level("WARNING"):
        dataset = FindQueryDataset(image_dir, ann_file)
    assert dict(dataset.setup_issues.counts) == {
        "unknown_category_id": 1,
        "invalid_polygon": 1,
        "empty_mask": 1,
        "missing_annotation_field": 1,
        "unknown_image_id": 1,
        "rle_size_mismatch": 1,
        "missing_image_file": 1,
    }
    assert len(dataset) == 2
    summary = [r.getMessage() for r in caplog.records if "skipped bad inputs" in r.getMessage()]
    assert len(summary) == 1 and "img3.png" in summary[0]
    assert [a["id"] for a in dataset.records[1].annotations] == [21]


@pytest.mark.parametrize("field", ["category_id", "missing_image"])
def test_strict_mode_raises(coco_files, field):
    image_dir, ann_file, data = coco_files
    if field == "category_id":
        data["annotations"][0]["category_id"] = 99
        expected = "unknown_category_id"
    else:
        (image_dir / "img2.png").unlink()
        expected = "img2.png"
    _rewrite(ann_file, data)
    with pytest.raises(DataIssueError, match=expected):
        FindQueryDataset(image_dir, ann_file, strict=True)


def test_corrupt_image_skipped_at_load_time(coco_files):
    image_dir, ann_file, _ = coco_files
    (image_dir / "img1.png").write_bytes(b"definitely not a png")
    dataset = FindQueryDataset(image_dir, ann_file)
    assert len(dataset) == 3  # exists on disk, so only discovered when loaded
    sample = dataset[0]
    assert sample.image_id == 2  # the next valid item
    assert dataset.load_issues.counts["unreadable_image"] == 1
    assert "img1.png" in dataset.load_issues.examples["unreadable_image"]
    with pytest.raises(DataIssueError, match="img1.png"):
        FindQueryDataset(image_dir, ann_file, strict=True)[0]


def test_image_size_mismatch_is_unreadable(coco_files):
    image_dir, ann_file, data = coco_files
    data["images"][1]["height"] = 41
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] != 2]
    _rewrite(ann_file, data)
    dataset = FindQueryDataset(image_dir, ann_file)
    assert dataset[1].image_id == 3
    assert dataset.load_issues.counts["unreadable_image"] == 1


def test_lvis_federated_fields(coco_files):
    image_dir, ann_file, data = coco_files
    data["images"][0]["neg_category_ids"] = [4]
    data["images"][0]["not_exhaustive_category_ids"] = [2]
    for image in data["images"]:
        image["coco_url"] = f"http://example.invalid/images/{image.pop('file_name')}"
    _rewrite(ann_file, data)
    dataset = FindQueryDataset(image_dir.parent, ann_file, all_categories=True)
    sample = dataset[0]
    assert sample.category_ids == [1, 2, 4]
    assert sample.is_exhaustive == [True, False, True]
