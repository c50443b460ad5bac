"""QueryRanking tells a collapsed decoder (every query the same mask and score) from one that
ranks the matched query first."""

from __future__ import annotations

import math

import torch

from region_sam3.eval.query_ranking import QueryRanking, mask_iou


def _square(y: int, x: int, size: int = 4, side: int = 16) -> torch.Tensor:
    m = torch.zeros(side, side, dtype=torch.bool)
    m[y:y + size, x:x + size] = True
    return m


def _box(y: int, x: int, size: int = 4, side: int = 16) -> list[float]:
    return [(x + size / 2) / side, (y + size / 2) / side, size / side, size / side]


def test_mask_iou_of_overlapping_and_empty_masks():
    a, b = _square(0, 0), _square(0, 2)  # 8 px shared of 24
    iou = mask_iou(torch.stack([a, torch.zeros_like(a)]), torch.stack([b]))
    assert torch.allclose(iou, torch.tensor([[8 / 24], [0.0]]))


def test_collapsed_queries_have_zero_spread_unit_pair_iou_and_all_queries_good():
    stats = QueryRanking()
    gt, gt_box = _square(2, 2), _box(2, 2)
    q = 6
    stats.process(torch.full((q,), 0.18), gt.expand(q, -1, -1),
                  torch.tensor([_box(10, 10)] * q), gt[None], torch.tensor([gt_box]))
    s = stats.evaluate()
    assert s["spread"] == 0.0 and s["pair_iou"] == 1.0
    assert s["good_per_object"] == q and s["oracle_recall"] == 1.0
    assert s["good_box_iou"] == 0.0
    assert math.isnan(s["query_auc"]) and math.isnan(s["query_auc_within"])  # nothing to rank against


def test_a_ranking_decoder_puts_the_matched_query_first():
    stats = QueryRanking()
    objects = [(1, 1), (9, 9)]
    gt = torch.stack([_square(*o) for o in objects])
    gt_boxes = torch.tensor([_box(*o) for o in objects])
    # queries 0 and 1 segment the two objects with high probability, 2-4 are empty
    masks = torch.cat([gt, torch.zeros(3, 16, 16, dtype=torch.bool)])
    probs = torch.tensor([0.9, 0.8, 0.1, 0.05, 0.02])
    boxes = torch.cat([gt_boxes, torch.tensor([_box(0, 12)] * 3)])
    stats.process(probs, masks, boxes, gt, gt_boxes)
    s = stats.evaluate()
    assert s["query_auc"] == 1.0 and s["query_auc_within"] == 1.0
    assert s["oracle_top1"] == 0.5 and s["oracle_top3"] == 1.0  # ranks 1 and 2
    assert s["good_per_object"] == 1.0 and s["good_box_iou"] == 1.0
    assert abs(s["spread"] - 0.88) < 1e-6


def test_no_data_is_nan_with_zero_counts():
    s = QueryRanking().evaluate()
    assert s["num_objects"] == 0 and s["num_prompts"] == 0
    assert all(math.isnan(v) for k, v in s.items() if not k.startswith("num_"))
