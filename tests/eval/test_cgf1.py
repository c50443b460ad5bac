"""cgF1 / IL_MCC / positive micro-F1 equal SAM3's ``CGF1Evaluator`` on a constructed case."""

from __future__ import annotations

import contextlib
import io
import json
import math

import pytest

from region_sam3.eval import CGF1Evaluator
from tests.eval.records import box_mask, detections, ground_truth

H, W = 40, 48


def case():
    a, b, c = box_mask(H, W, 0, 0, 10, 10), box_mask(H, W, 20, 20, 34, 40), \
        box_mask(H, W, 0, 30, 12, 46)
    shifted = box_mask(H, W, 2, 0, 12, 10)  # IoU 0.67 with a: TP at 0.5, FP at 0.75
    gts = [
        ground_truth(1, [a, b, c], [1, 1, 2], prompted=[1, 2, 3], iscrowd=[0, 0, 1]),
        ground_truth(2, [a], [1], prompted=[1, 2]),
        ground_truth(3, [b], [3], prompted=[1, 3]),
    ]
    dets = [
        detections(1, [shifted, b, c, a], [0.9, 0.7, 0.8, 0.3], [1, 1, 2, 3]),
        detections(2, [a, c], [0.95, 0.6], [1, 2]),  # FP on a negative pair
        detections(3, [a], [0.4], [3]),  # below threshold: a missed positive
    ]
    return dets, gts


def sam3_reference(dets, gts, tmp_path):
    """Write the pairs as SAM3's files and run its ``CGF1Evaluator`` wrapper."""
    from sam3.eval.cgf1_eval import CGF1Evaluator as Sam3CGF1

    images, anns, preds = [], [], []
    for d, g in zip(dets, gts):
        for c in g.prompted_category_ids:
            pid = len(images) + 1
            images.append({"id": pid, "height": H, "width": W, "is_instance_exhaustive": True})
            for a in g.annotations:
                if a["category_id"] == c:
                    anns.append({**a, "id": len(anns) + 1, "image_id": pid, "category_id": 1})
            preds += [{"image_id": pid, "category_id": 1, "segmentation": r, "score": float(s)}
                      for r, s, lab in zip(d.rles, d.scores, d.labels) if lab == c]
    (tmp_path / "gt.json").write_text(json.dumps(
        {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "x"}]}))
    (tmp_path / "pred.json").write_text(json.dumps(preds))
    with contextlib.redirect_stdout(io.StringIO()):
        return Sam3CGF1(str(tmp_path / "gt.json")).evaluate(str(tmp_path / "pred.json"))


def test_cgf1_matches_sam3_cgf1_evaluator(tmp_path):
    dets, gts = case()
    ev = CGF1Evaluator()
    ev.process(dets, gts)
    ours = ev.evaluate()
    ref = sam3_reference(dets, gts, tmp_path)
    names = {"cgF1": "cgF1", "cgF1@0.5": "cgF1@0.5", "cgF1@0.75": "cgF1@0.75",
             "IL_MCC": "IL_MCC", "positive_micro_F1": "positive_micro_F1",
             "positive_micro_F1@0.5": "positive_micro_F1@0.5",
             "positive_micro_F1@0.75": "positive_micro_F1@0.75"}
    for ours_key, ref_key in names.items():
        assert ours[f"cgf1/{ours_key}"] == pytest.approx(ref[f"cgF1_eval_segm_{ref_key}"],
                                                        abs=1e-9), ours_key
    assert ours["cgf1/num_pairs"] == 7 and ours["cgf1/num_positive_pairs"] == 3
    assert 0 < ours["cgf1/cgF1@0.5"] < 1 and ours["cgf1/cgF1@0.75"] < ours["cgf1/cgF1@0.5"]


def test_cgf1_empty_is_nan_with_count():
    m = CGF1Evaluator().evaluate()
    assert math.isnan(m["cgf1/cgF1"]) and m["cgf1/num_pairs"] == 0
