"""Setup-time validation of COCO files (`data/coco_index.py`): RLE counts, duplicate image ids,
negative areas (issue 19 item 5). Each of these passed setup silently before."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from region_sam3.data.coco import original_frame_annotations
from region_sam3.data.coco_index import load_coco_index, rle_string_counts
from region_sam3.data.issues import DataIssueError


def _rewrite(ann_file, data):
    ann_file.write_text(json.dumps(data))


def _add(data, ann_id, segmentation, **extra):
    data["annotations"].append({"id": ann_id, "image_id": 2, "category_id": 2,
                                "segmentation": segmentation, "iscrowd": 0, **extra})


def test_rle_string_counts_match_pycocotools():
    rng = np.random.default_rng(0)
    for shape in [(40, 50), (7, 3), (64, 64)]:
        mask = np.asfortranarray((rng.random(shape) > 0.6).astype(np.uint8))
        counts = mask_utils.encode(mask)["counts"]
        runs = rle_string_counts(counts)
        assert sum(runs) == mask.size
        flat = np.repeat(np.arange(len(runs)) % 2, runs).astype(np.uint8)  # column-major
        assert np.array_equal(flat.reshape(shape[::-1]).T, mask)
    assert rle_string_counts("zz") is None and rle_string_counts("0P") is None  # bad / cut off


def test_bad_rle_counts_are_counted_with_the_annotation_id(coco_files):
    image_dir, ann_file, data = coco_files
    short = mask_utils.encode(np.asfortranarray(np.ones((40, 40), np.uint8)))["counts"].decode()
    _add(data, 96, {"size": [40, 50], "counts": short})  # runs cover 40x40, not 40x50
    _add(data, 97, {"size": [40, 50], "counts": "garbage counts!"})
    _add(data, 98, {"size": [40, 50], "counts": [100, 50]})  # uncompressed, 150 != 2000
    _add(data, 99, {"size": [40, 50], "counts": [2100, -100]})
    data["annotations"].append({"id": 100, "image_id": 2, "category_id": 3, "iscrowd": 1,
                                "segmentation": {"size": [40, 50], "counts": "zz"}})
    _rewrite(ann_file, data)
    index = load_coco_index(ann_file, image_dir)
    assert dict(index.issues.counts) == {"rle_counts_mismatch": 3, "invalid_rle_counts": 2}
    assert "(id 96)" in index.issues.examples["rle_counts_mismatch"]
    assert "(id 97)" in index.issues.examples["invalid_rle_counts"]
    kept = {a["id"] for r in index.images for a in r.annotations + r.crowd_annotations}
    assert not kept & {96, 97, 98, 99, 100}
    for record in index.images:  # what is kept decodes (no worker dies later)
        original_frame_annotations(record)
    with pytest.raises(DataIssueError, match=r"annotations\[\d+\] \(id 96\).*rle_counts_mismatch"):
        load_coco_index(ann_file, image_dir, strict=True)


def test_duplicate_image_ids_name_the_file_and_the_ids(coco_files):
    image_dir, ann_file, data = coco_files
    data["images"] += [dict(data["images"][0], file_name="img2.png"), dict(data["images"][2])]
    _rewrite(ann_file, data)
    with pytest.raises(ValueError, match=r"duplicate image ids in 'images': 1 \(x2\), 3 \(x2\)") \
            as info:
        load_coco_index(ann_file, image_dir)
    assert str(ann_file) in str(info.value)


def test_negative_area_is_recomputed_and_counted(coco_files):
    """COCOeval drops a ground truth whose `area` lies outside every area range: a negative
    area made the object vanish from AP. Recomputed from the mask, counted."""
    image_dir, ann_file, data = coco_files
    data["annotations"][0]["area"] = -5.0
    data["annotations"][1]["area"] = "NaN"
    _rewrite(ann_file, data)
    index = load_coco_index(ann_file, image_dir)
    assert index.issues.counts["invalid_area"] == 2
    assert "(id 11)" in index.issues.examples["invalid_area"]
    gt = {a["id"]: a for a in original_frame_annotations(index.images[0])}
    for ann_id in (11, 12):
        assert gt[ann_id]["area"] == float(mask_utils.area(gt[ann_id]["segmentation"])) > 0
    with pytest.raises(DataIssueError, match=r"\(id 11\): field 'area' = -5.0"):
        load_coco_index(ann_file, image_dir, strict=True)
