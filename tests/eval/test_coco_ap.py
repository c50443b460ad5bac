"""COCO mask AP through pycocotools on constructed cases with hand-derivable answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from region_sam3.eval import COCOMaskEvaluator, QueryPrediction, QueryTarget


def boxes_to_masks(size: int, boxes: list[tuple[int, int, int, int]]) -> torch.Tensor:
    """[N, size, size] bool masks of axis-aligned rectangles (y0, x0, y1, x1)."""
    m = torch.zeros(len(boxes), size, size, dtype=torch.bool)
    for i, (y0, x0, y1, x1) in enumerate(boxes):
        m[i, y0:y1, x0:x1] = True
    return m


def pred(masks: torch.Tensor, scores: list[float]) -> QueryPrediction:
    # Logits +-10 so that thresholding at 0 reproduces the masks.
    return QueryPrediction(masks=masks.float() * 20 - 10, scores=torch.tensor(scores))


def evaluate(preds, targets) -> dict[str, float]:
    ev = COCOMaskEvaluator()
    ev.process(preds, targets)
    return ev.evaluate()


def test_perfect_predictions_give_ap_one():
    g1 = boxes_to_masks(128, [(0, 0, 40, 40), (50, 50, 120, 120)])
    g2 = boxes_to_masks(128, [(10, 10, 30, 30)])
    targets = [
        QueryTarget(image_id=1, category_id=1, masks=g1),
        QueryTarget(image_id=1, category_id=2, masks=g2),
        QueryTarget(image_id=2, category_id=1, masks=g2),
    ]
    preds = [pred(g1, [0.9, 0.3]), pred(g2, [0.2]), pred(g2, [0.6])]
    m = evaluate(preds, targets)
    for k in ("mask/AP", "mask/AP50", "mask/AP75", "mask/AR100"):
        assert m[k] == pytest.approx(1.0)


def test_known_ap_with_ranked_false_positive():
    # 2 GT; detections ranked TP(0.9), FP(0.8), TP(0.7) -> precision 1, 1/2, 2/3 at recall
    # 0.5, 0.5, 1. COCO interpolates precision (max over recall >= r) on 101 recall points:
    # r in [0, 0.5] (51 points) -> 1, r in (0.5, 1] (50 points) -> 2/3.
    gt = boxes_to_masks(64, [(0, 0, 20, 20), (30, 30, 60, 60)])
    fp = boxes_to_masks(64, [(40, 0, 60, 20)])
    masks = torch.cat([gt[:1], fp, gt[1:]])
    m = evaluate([pred(masks, [0.9, 0.8, 0.7])], [QueryTarget(1, 1, gt)])
    expected = (51 * 1.0 + 50 * 2 / 3) / 101
    assert m["mask/AP"] == pytest.approx(expected, abs=1e-6)
    assert m["mask/AP50"] == pytest.approx(expected, abs=1e-6)


def test_false_positive_scored_above_true_positive_halves_ap():
    gt = boxes_to_masks(64, [(0, 0, 20, 20)])
    fp = boxes_to_masks(64, [(40, 40, 60, 60)])
    m = evaluate([pred(torch.cat([fp, gt]), [0.9, 0.8])], [QueryTarget(1, 1, gt)])
    assert m["mask/AP"] == pytest.approx(0.5)
    # Same detections with the TP ranked first: the FP comes after full recall -> AP 1.
    m = evaluate([pred(torch.cat([fp, gt]), [0.1, 0.8])], [QueryTarget(1, 1, gt)])
    assert m["mask/AP"] == pytest.approx(1.0)


def test_false_positive_on_negative_prompt_of_same_category_counts():
    gt = boxes_to_masks(64, [(0, 0, 20, 20)])
    empty = torch.zeros(0, 64, 64, dtype=torch.bool)
    targets = [QueryTarget(1, 7, gt), QueryTarget(2, 7, empty)]
    m = evaluate([pred(gt, [0.5]), pred(gt, [0.9])], targets)
    assert m["mask/AP"] == pytest.approx(0.5)


def test_size_buckets_follow_gt_area():
    # 20x20 = 400 px < 32^2 (small); 100x100 = 10000 px >= 96^2 (large); no medium GT.
    gt = boxes_to_masks(128, [(0, 0, 20, 20), (28, 28, 128, 128)])
    # Only the large object is found: small AP 0, large AP 1, medium undefined (-1).
    m = evaluate([pred(gt[1:], [0.9])], [QueryTarget(1, 1, gt)])
    assert m["mask/AP_S"] == pytest.approx(0.0)
    assert m["mask/AP_L"] == pytest.approx(1.0)
    assert m["mask/AP_M"] == -1.0
    # Only the small one is found: the small object alone moves AP_S.
    m = evaluate([pred(gt[:1], [0.9])], [QueryTarget(1, 1, gt)])
    assert m["mask/AP_S"] == pytest.approx(1.0)
    assert m["mask/AP_L"] == pytest.approx(0.0)
    assert m["mask/AP_M"] == -1.0


def test_orig_size_rescales_areas_into_original_pixels():
    # 20x20 at 64^2 evaluated for an original 128^2 image is 40x40 = 1600 px: medium.
    gt = boxes_to_masks(64, [(0, 0, 20, 20)])
    m = evaluate([pred(gt, [0.9])], [QueryTarget(1, 1, gt, orig_size=(128, 128))])
    assert m["mask/AP_S"] == -1.0
    assert m["mask/AP_M"] == pytest.approx(1.0)


def test_crowd_gt_is_ignored():
    gt = boxes_to_masks(64, [(0, 0, 20, 20), (30, 30, 60, 60)])
    t = QueryTarget(1, 1, gt, iscrowd=torch.tensor([False, True]))
    # Missing the crowd region does not cost recall.
    m = evaluate([pred(gt[:1], [0.9])], [t])
    assert m["mask/AP"] == pytest.approx(1.0)


def test_duplicate_queries_are_counted_once():
    gt = boxes_to_masks(64, [(0, 0, 20, 20)])
    fp = boxes_to_masks(64, [(40, 40, 60, 60)])
    p = pred(torch.cat([fp, gt]), [0.9, 0.8])
    t = QueryTarget(1, 1, gt)
    # DistributedSampler padding repeats samples; a duplicate must not change AP
    # (without de-duplication the second copy would add a GT and two dets).
    assert evaluate([p, p], [t, t]) == evaluate([p], [t])


def test_no_queries_gives_minus_one():
    m = COCOMaskEvaluator().evaluate()
    assert m["mask/AP"] == -1.0


def test_matches_stock_pycocotools_loadres_pipeline():
    """Our in-memory build equals the textbook gt-json + loadRes(results) route."""
    import contextlib
    import io

    import pycocotools.mask as mask_utils
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    g = torch.Generator().manual_seed(1)
    preds, targets, gt_anns, results = [], [], [], []
    for q in range(6):
        gt = boxes_to_masks(
            48, [(4 + 10 * j, 2 + 7 * q, 12 + 10 * j, 12 + 7 * q) for j in range(3)]
        )
        logits = gt.float() * 6 - 3 + torch.randn(3, 48, 48, generator=g) * 1.5
        scores = torch.rand(3, generator=g)
        preds.append(QueryPrediction(masks=logits, scores=scores))
        targets.append(QueryTarget(image_id=q // 2, category_id=q % 2 + 1, masks=gt))
        for m in gt:
            rle = mask_utils.encode(np.asfortranarray(m.numpy().astype(np.uint8)))
            gt_anns.append(
                {
                    "id": len(gt_anns) + 1,
                    "image_id": q // 2,
                    "category_id": q % 2 + 1,
                    "segmentation": rle,
                    "area": float(m.sum()),
                    "iscrowd": 0,
                    "bbox": list(mask_utils.toBbox(rle)),
                }
            )
        for m, s in zip(logits > 0, scores):
            rle = mask_utils.encode(np.asfortranarray(m.numpy().astype(np.uint8)))
            results.append(
                {
                    "image_id": q // 2,
                    "category_id": q % 2 + 1,
                    "segmentation": rle,
                    "score": float(s),
                }
            )
    coco = COCO()
    coco.dataset = {
        "images": [{"id": i, "height": 48, "width": 48} for i in range(3)],
        "categories": [{"id": 1}, {"id": 2}],
        "annotations": gt_anns,
    }
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
        ev = COCOeval(coco, coco.loadRes(results), iouType="segm")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    ours = evaluate(preds, targets)
    assert 0 < ev.stats[0] < 1  # a non-trivial case
    for i, name in enumerate(["AP", "AP50", "AP75", "AP_S", "AP_M", "AP_L"]):
        assert ours[f"mask/{name}"] == pytest.approx(ev.stats[i])
