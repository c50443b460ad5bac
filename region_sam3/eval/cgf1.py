"""SAM3's own metrics: cgF1, IL_MCC and positive micro-F1 (``sam3.eval.cgf1_eval``).

SAM3 evaluates every (image, noun phrase) pair as one "image" of ``CGF1Eval``: predictions with
``score >= 0.5`` are Hungarian-matched to the non-crowd GT of the pair (crowd GT are ignored),
giving TP/FP/FN at IoU 0.5:0.95; image-level (IL) TP/FP/TN/FN say whether the phrase was
correctly detected as present; ``cgF1 = positive_micro_F1 * IL_MCC``. Here the pairs are the
prompted (image, category) pairs and their predictions the image's top-K detections of that
label. ``CGF1Eval`` itself does the matching and accumulation (its module-level ``_evaluate``
is the loop ``CGF1Evaluator.evaluate`` runs per pair; we run it once over all pairs, which is
what the wrapper's accumulation amounts to with a single GT set), so the numbers are SAM3's.

Keys (prefix ``"cgf1"``): ``cgF1``, ``cgF1@0.5``, ``cgF1@0.75``, ``IL_MCC``, ``IL_F1``,
``positive_micro_F1`` (+ ``@0.5``, ``@0.75``), ``precision``, ``recall``, ``num_pairs``,
``num_positive_pairs``. NaN without pairs.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pycocotools.coco import COCO

from region_sam3.eval.base import DatasetEvaluator, GatherFn, ImageRecord, nan_if_empty
from region_sam3.eval.types import ImageDetections, ImageGroundTruth

REPORTED = {
    ("cgF1", None): "cgF1", ("cgF1", 0.5): "cgF1@0.5", ("cgF1", 0.75): "cgF1@0.75",
    ("IL_MCC", None): "IL_MCC", ("IL_F1", None): "IL_F1",
    ("positive_micro_F1", None): "positive_micro_F1",
    ("positive_micro_F1", 0.5): "positive_micro_F1@0.5",
    ("positive_micro_F1", 0.75): "positive_micro_F1@0.75",
    ("precision", None): "precision", ("recall", None): "recall",
}


@dataclass
class PairSummary:
    """One (image, category) pair: its GT and predictions (COCO dicts, RLE)."""

    height: int
    width: int
    gt: list[dict[str, Any]]
    dt: list[dict[str, Any]]


def summarize_pairs(dets: ImageDetections, gt: ImageGroundTruth) -> list[PairSummary]:
    pairs = []
    for c in gt.prompted_category_ids:
        anns = [{"segmentation": a["segmentation"], "iscrowd": int(a.get("iscrowd", 0)),
                 "area": float(a["area"])}
                for a in gt.annotations if int(a["category_id"]) == c]
        dts = [{"segmentation": r, "score": float(s)}
               for r, s, lab in zip(dets.rles, dets.scores, dets.labels) if int(lab) == c]
        pairs.append(PairSummary(gt.height, gt.width, anns, dts))
    return pairs


def run_cgf1(pairs: Sequence[PairSummary], threshold: float = 0.5) -> dict[str, float]:
    """``CGF1Eval`` over the pairs (pair ``i`` is COCO image ``i + 1``, one category)."""
    from sam3.eval.cgf1_eval import CGF1_METRICS, CGF1Eval, _evaluate

    if not pairs:
        return {name: math.nan for name in REPORTED.values()}
    images, gts, dts = [], [], []
    for i, p in enumerate(pairs, start=1):
        images.append({"id": i, "height": p.height, "width": p.width})
        # Unique ids (> 0): COCO indexes annotations by id.
        gts += [{**a, "id": len(gts) + j, "image_id": i, "category_id": 1}
                for j, a in enumerate(p.gt, start=1)]
        dts += [{**d, "id": len(dts) + j, "image_id": i, "category_id": 1, "iscrowd": 0}
                for j, d in enumerate(p.dt, start=1)]
    coco_gt, coco_dt = COCO(), COCO()
    coco_gt.dataset = {"images": images, "categories": [{"id": 1}], "annotations": gts}
    coco_dt.dataset = {"images": images, "categories": [{"id": 1}], "annotations": dts}
    with contextlib.redirect_stdout(io.StringIO()), np.errstate(divide="ignore", invalid="ignore"):
        coco_gt.createIndex()
        coco_dt.createIndex()
        ev = CGF1Eval(coco_gt, coco_dt, iouType="segm", threshold=threshold)
        ev.params.imgIds = [img["id"] for img in images]
        _, eval_imgs = _evaluate(ev)
        ev.evalImgs = list(eval_imgs.flatten())
        ev.accumulate()
        ev.summarize()
    out = {}
    for metric, value in zip(CGF1_METRICS, ev.stats):
        name = REPORTED.get((metric.name, metric.iou_threshold))
        if name is not None:
            out[name] = float(value) if np.isfinite(value) else math.nan
    return out


class CGF1Evaluator(DatasetEvaluator):
    """SAM3's cgF1 family over prompted (image, category) pairs (module docstring)."""

    def __init__(
        self,
        prefix: str = "cgf1",
        threshold: float = 0.5,
        crowded_thresholds: Sequence[int] = (),
        gather_fn: GatherFn | None = None,
        broadcast_fn=None,
    ) -> None:
        super().__init__(prefix, crowded_thresholds, gather_fn, broadcast_fn)
        self.threshold = threshold

    def summarize(self, dets: ImageDetections, gt: ImageGroundTruth) -> list[PairSummary]:
        return summarize_pairs(dets, gt)

    def compute(self, records: Sequence[ImageRecord]) -> dict[str, float]:
        pairs = [p for r in records for p in r.data]
        out = run_cgf1(pairs, self.threshold)
        out["num_pairs"] = float(len(pairs))
        out["num_positive_pairs"] = float(
            sum(1 for p in pairs if any(not a["iscrowd"] for a in p.gt)))
        return nan_if_empty(out, not pairs)
