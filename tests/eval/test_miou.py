"""Matched mIoU with Hungarian matching."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from region_sam3.eval import (
    MatchedIoUEvaluator,
    hungarian_match,
    mask_iou_matrix,
)
from tests.eval.records import detections, ground_truth


def rects(size: int, boxes: list[tuple[int, int, int, int]]) -> torch.Tensor:
    m = torch.zeros(len(boxes), size, size, dtype=torch.bool)
    for i, (y0, x0, y1, x1) in enumerate(boxes):
        m[i, y0:y1, x0:x1] = True
    return m


GT = rects(32, [(0, 0, 8, 8), (10, 10, 20, 20), (22, 0, 32, 10)])


def run(pred_masks, scores, gt=GT, iscrowd=None, **kw) -> dict[str, float]:
    ev = MatchedIoUEvaluator(**kw)
    d = detections(0, list(pred_masks.numpy()), scores, [1] * len(scores), size=(32, 32))
    ev.process([d], [ground_truth(0, list(gt.numpy()), [1] * len(gt), iscrowd=iscrowd)])
    return ev.evaluate()


def test_iou_matrix_values():
    a = rects(8, [(0, 0, 4, 4), (0, 0, 4, 2)])
    b = rects(8, [(0, 0, 4, 4), (4, 4, 8, 8)])
    iou = mask_iou_matrix(a, b)
    assert iou.tolist() == [[1.0, 0.0], [0.5, 0.0]]


def test_hungarian_beats_greedy():
    # Greedy takes 0.9 then is left with 0.0; the optimal assignment is 0.8 + 0.85.
    rows, cols = hungarian_match(np.array([[0.9, 0.8], [0.85, 0.0]]))
    assert dict(zip(rows.tolist(), cols.tolist())) == {0: 1, 1: 0}


def test_permuted_predictions_are_perfect():
    m = run(GT[[2, 0, 1]], [0.9, 0.8, 0.7])
    assert m["miou/mIoU"] == pytest.approx(1.0)
    assert m["miou/num_gt"] == 3


def test_missing_prediction_counts_zero():
    m = run(GT[[1, 2]], [0.9, 0.8])
    assert m["miou/mIoU"] == pytest.approx(2 / 3)
    assert m["miou/matched_IoU"] == pytest.approx(1.0)


def test_partial_overlap_and_false_positive():
    # Half of GT0 (IoU 0.5), GT1 exact, plus a stray prediction that overlaps nothing.
    preds = torch.cat([rects(32, [(0, 0, 8, 4)]), GT[1:2], rects(32, [(0, 24, 4, 28)])])
    m = run(preds, [0.9, 0.9, 0.9])
    assert m["miou/mIoU"] == pytest.approx((0.5 + 1.0 + 0.0) / 3)
    assert m["miou/num_unmatched_pred"] == 1


def test_score_threshold_drops_low_confidence_predictions_but_not_the_topk_variant():
    m = run(GT, [0.9, 0.9, 0.1], score_threshold=0.5)
    assert m["miou/mIoU"] == pytest.approx(2 / 3)
    assert m["miou/mIoU_topk"] == pytest.approx(1.0)  # best detection per GT, any score
    m = run(GT, [0.9, 0.9, 0.1], score_threshold=None)
    assert m["miou/mIoU"] == pytest.approx(1.0)


def test_under_confident_model_is_not_every_mask_wrong():
    m = run(GT, [0.1, 0.2, 0.3], score_threshold=0.5)
    assert m["miou/mIoU"] == 0.0 and m["miou/mIoU_topk"] == pytest.approx(1.0)
    assert np.isnan(m["miou/matched_IoU"])  # no pair at the threshold: NaN, not 0


def test_crowd_gt_excluded_and_boundary_iou_reported():
    m = run(GT[:2], [0.9, 0.9], iscrowd=[0, 0, 1], boundary=True)
    assert m["miou/num_gt"] == 2
    assert m["miou/mIoU"] == pytest.approx(1.0)
    assert m["miou/mBoundaryIoU"] == pytest.approx(1.0)


def test_empty_is_nan_with_count_zero():
    m = MatchedIoUEvaluator().evaluate()
    assert np.isnan(m["miou/mIoU"]) and m["miou/num_gt"] == 0
