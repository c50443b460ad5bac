"""COCO mask AP through pycocotools on constructed per-image cases with hand-derivable answers."""

from __future__ import annotations

import math

import pytest

from region_sam3.eval import COCOMaskEvaluator
from tests.eval.records import box_mask, detections, ground_truth


def evaluate(dets, gts) -> dict[str, float]:
    ev = COCOMaskEvaluator()
    ev.process(dets, gts)
    return ev.evaluate()


def test_perfect_predictions_give_ap_one():
    a, b, c = box_mask(96, 128, 0, 0, 40, 40), box_mask(96, 128, 50, 50, 90, 120), \
        box_mask(96, 128, 10, 10, 30, 30)
    gts = [ground_truth(1, [a, b, c], [1, 1, 2]), ground_truth(2, [c], [1])]
    dets = [detections(1, [a, b, c], [0.9, 0.3, 0.2], [1, 1, 2]),
            detections(2, [c], [0.6], [1])]
    m = evaluate(dets, gts)
    for k in ("mask/AP", "mask/AP50", "mask/AP75", "mask/AR100"):
        assert m[k] == pytest.approx(1.0)
    assert m["mask/num_images"] == 2 and m["mask/num_gt"] == 4 and m["mask/num_dets"] == 4


def test_known_ap_with_ranked_false_positive():
    # 2 GT; detections ranked TP(0.9), FP(0.8), TP(0.7): COCO's 101-point interpolation gives
    # precision 1 on r in [0, 0.5] (51 points) and 2/3 on (0.5, 1] (50 points).
    g1, g2, fp = box_mask(64, 64, 0, 0, 20, 20), box_mask(64, 64, 30, 30, 60, 60), \
        box_mask(64, 64, 40, 0, 60, 20)
    m = evaluate([detections(1, [g1, fp, g2], [0.9, 0.8, 0.7], [1, 1, 1])],
                 [ground_truth(1, [g1, g2], [1, 1])])
    expected = (51 * 1.0 + 50 * 2 / 3) / 101
    assert m["mask/AP"] == pytest.approx(expected, abs=1e-6)


def test_false_positive_on_negative_prompt_counts():
    g = box_mask(64, 64, 0, 0, 20, 20)
    # Category 2 was prompted (a negative): its detection, scored first, is a false positive
    # only for category 2, whose AP is 0 -> mean over categories 1 (AP 1) and 2 (no GT: skipped).
    m = evaluate([detections(1, [g, g], [0.8, 0.9], [1, 2])],
                 [ground_truth(1, [g], [1], prompted=[1, 2])])
    assert m["mask/AP"] == pytest.approx(1.0)  # COCO averages over categories with GT


def test_crowd_region_detection_is_not_a_false_positive():
    obj, crowd = box_mask(64, 64, 0, 0, 20, 20), box_mask(64, 64, 30, 0, 64, 64)
    gt = ground_truth(1, [obj, crowd], [1, 1], iscrowd=[0, 1])
    # The detection on the crowd region is scored *above* the true positive.
    m = evaluate([detections(1, [crowd, obj], [0.95, 0.9], [1, 1])], [gt])
    assert m["mask/AP"] == pytest.approx(1.0)
    assert m["mask/num_gt"] == 1
    # Control: the same detection with the crowd region dropped (old loader) is an FP.
    no_crowd = ground_truth(1, [obj], [1])
    assert evaluate([detections(1, [crowd, obj], [0.95, 0.9], [1, 1])], [no_crowd])[
        "mask/AP"] < 0.6


def test_size_buckets_use_original_frame_areas():
    small, large = box_mask(480, 640, 0, 0, 20, 20), box_mask(480, 640, 100, 100, 300, 300)
    m = evaluate([detections(1, [small, large], [0.9, 0.8], [1, 1])],
                 [ground_truth(1, [small, large], [1, 1])])
    assert m["mask/AP_S"] == pytest.approx(1.0) and m["mask/AP_L"] == pytest.approx(1.0)
    assert math.isnan(m["mask/AP_M"])  # no medium GT: NaN, not COCO's -1


def test_duplicate_images_are_counted_once():
    g, fp = box_mask(64, 64, 0, 0, 20, 20), box_mask(64, 64, 40, 40, 60, 60)
    d, t = detections(1, [fp, g], [0.9, 0.8], [1, 1]), ground_truth(1, [g], [1])
    # DistributedSampler padding repeats images; a duplicate must not change AP.
    assert evaluate([d, d], [t, t]) == evaluate([d], [t])


def test_empty_group_is_nan_with_count_zero():
    m = COCOMaskEvaluator(crowded_thresholds=(10,)).evaluate()
    assert math.isnan(m["mask/AP"]) and m["mask/num_images"] == 0
    g = box_mask(32, 32, 0, 0, 8, 8)
    ev = COCOMaskEvaluator(crowded_thresholds=(10,))
    ev.process([detections(1, [g], [0.9], [1])], [ground_truth(1, [g], [1])])
    m = ev.evaluate()
    assert m["mask/AP"] == pytest.approx(1.0)
    assert m["crowded10/num_images"] == 0 and math.isnan(m["crowded10/mask/AP"])


def test_mismatched_image_is_rejected():
    g = box_mask(32, 32, 0, 0, 8, 8)
    with pytest.raises(ValueError, match="do not match"):
        COCOMaskEvaluator().process([detections(1, [g], [0.9], [1])], [ground_truth(2, [g], [1])])
