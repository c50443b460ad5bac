"""``build_coco``'s results object (areas and boxes precomputed once per RLE list) is the one
``COCO.loadRes`` makes, field for field, and gives the same COCOeval numbers."""

from __future__ import annotations

import copy

import numpy as np
import pycocotools.mask as mask_utils
from pycocotools.cocoeval import COCOeval

from region_sam3.eval.base import ImageRecord
from region_sam3.eval.coco_ap import build_coco, rle_geometry, summarize_coco
from tests.eval.records import box_mask, detections, ground_truth


def records() -> list[ImageRecord]:
    rng = np.random.default_rng(0)
    out = []
    for image_id in (1, 2, 3):
        masks = []
        for _ in range(4):
            (y0, y1), (x0, x1) = sorted(rng.integers(0, 60, 2)), sorted(rng.integers(0, 80, 2))
            masks.append(box_mask(60, 80, int(y0), int(x0), int(y1) + 1, int(x1) + 1))
        gt = ground_truth(image_id, masks[:2], [1, 2], iscrowd=[0, int(image_id == 2)])
        dets = detections(image_id, masks, list(rng.random(4)), [1, 2, 1, 2])
        out.append(ImageRecord(image_id, 2, summarize_coco(dets, gt)))
    return out


def test_build_coco_results_equal_load_res():
    recs = records()
    coco_gt, coco_dt = build_coco(recs)
    ref = coco_gt.loadRes([copy.copy(d) for r in recs for d in r.data.dt])
    got, want = coco_dt.dataset["annotations"], ref.dataset["annotations"]
    assert len(got) == len(want) == 12
    for a, b in zip(got, want):
        assert a.keys() == b.keys()
        assert type(a["area"]) is type(b["area"]) and a["area"] == b["area"]
        np.testing.assert_array_equal(a["bbox"], b["bbox"])
        assert {k: a[k] for k in a if k not in ("area", "bbox")} == \
            {k: b[k] for k in b if k not in ("area", "bbox")}
    assert coco_dt.dataset["images"] == ref.dataset["images"]
    assert coco_dt.dataset["categories"] == ref.dataset["categories"]
    stats = []
    for dt in (coco_dt, ref):
        ev = COCOeval(coco_gt, dt, iouType="segm")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
        stats.append(ev.stats)
    np.testing.assert_array_equal(stats[0], stats[1])


def test_rle_geometry_is_per_list_and_matches_pycocotools():
    m = box_mask(20, 30, 2, 3, 10, 25)
    a = [mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))]
    b = [mask_utils.encode(np.asfortranarray(np.zeros((20, 30), np.uint8)))]
    assert rle_geometry(a)[0].tolist() == [int(m.sum())]
    assert rle_geometry(b)[0].tolist() == [0]  # a different list, not a cache hit
    np.testing.assert_array_equal(rle_geometry(a)[1], mask_utils.toBbox(a))
    assert rle_geometry([])[0].shape == (0,)
