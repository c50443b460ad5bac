"""COCO mask AP (pycocotools ``COCOeval``, iouType ``segm``, maxDets 100) built in memory.

Each find query is one COCO (imgId, catId) pair: ``imgId = target.image_id`` and
``catId = target.category_id``. Predictions and GT are stored as RLE, areas are rescaled to
original-image pixels (``QueryTarget.orig_size``) so the S/M/L buckets keep COCO's meaning.
AP is never re-implemented here: ``COCOeval`` does matching, accumulation and summarising.

Keys (``prefix`` default ``"mask"``): ``AP AP50 AP75 AP_S AP_M AP_L AR1 AR10 AR100``, values in
[0, 1], ``-1`` where COCO has nothing to average (e.g. no small GT -> ``AP_S = -1``).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pycocotools.mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from region_sam3.eval.base import DatasetEvaluator, GatherFn, QueryRecord
from region_sam3.eval.types import QueryPrediction, QueryTarget, encode_masks, keep_top

__all__ = ["COCOMaskEvaluator", "encode_masks", "build_coco", "run_cocoeval"]

# Positions in COCOeval.stats (segm / bbox summarize()).
STAT_NAMES = ("AP", "AP50", "AP75", "AP_S", "AP_M", "AP_L", "AR1", "AR10", "AR100")


@dataclass
class CocoQuerySummary:
    """RLE summary of one query. Areas are in original-image pixels."""

    height: int
    width: int
    dt_rles: list[dict[str, Any]]
    dt_scores: list[float]
    dt_areas: list[float]
    gt_rles: list[dict[str, Any]]
    gt_areas: list[float]
    gt_iscrowd: list[int]
    extra: dict[str, Any] = field(default_factory=dict)


def summarize_coco(
    pred: QueryPrediction, target: QueryTarget, max_dets: int = 100
) -> CocoQuerySummary:
    """RLE-encode the top ``max_dets`` predictions (by score) and all GT of a query."""
    keep = keep_top(pred.scores, None, max_dets)
    scale = target.area_scale()
    dt_rles = pred.rles(keep)
    gt_rles = target.rles()
    h, w = target.masks.shape[-2:]
    return CocoQuerySummary(
        height=int(h),
        width=int(w),
        dt_rles=dt_rles,
        dt_scores=[float(s) for s in pred.scores.detach().float().cpu()[keep]],
        dt_areas=[float(a) * scale for a in mask_utils.area(dt_rles)] if dt_rles else [],
        gt_rles=gt_rles,
        gt_areas=[float(a) * scale for a in mask_utils.area(gt_rles)] if gt_rles else [],
        gt_iscrowd=[int(c) for c in target.crowd_flags()],
    )


def build_coco(records: Sequence[QueryRecord], extra_keys: Sequence[str] = ()) -> tuple[COCO, COCO]:
    """In-memory (gt, dt) COCO objects. ``extra_keys`` copies ``summary.extra[k][i]`` into
    annotation ``i`` under key ``k`` (e.g. boundary RLEs) for both GT (``gt_{k}``) and dt
    (``dt_{k}``)."""
    images: dict[int, dict[str, int]] = {}
    cats: set[int] = set()
    gt_anns: list[dict[str, Any]] = []
    dt_anns: list[dict[str, Any]] = []
    for r in records:
        s: CocoQuerySummary = r.data
        images.setdefault(r.image_id, {"id": r.image_id, "height": s.height, "width": s.width})
        cats.add(r.category_id)
        for i, rle in enumerate(s.gt_rles):
            ann = {
                # COCO ids must be > 0: 0 means "unmatched" inside COCOeval.
                "id": len(gt_anns) + 1,
                "image_id": r.image_id,
                "category_id": r.category_id,
                "segmentation": rle,
                "area": s.gt_areas[i],
                "bbox": [float(v) for v in mask_utils.toBbox(rle)],
                "iscrowd": s.gt_iscrowd[i],
            }
            for k in extra_keys:
                ann[k] = s.extra[f"gt_{k}"][i]
            gt_anns.append(ann)
        for i, rle in enumerate(s.dt_rles):
            ann = {
                "id": len(dt_anns) + 1,
                "image_id": r.image_id,
                "category_id": r.category_id,
                "segmentation": rle,
                "score": s.dt_scores[i],
                "area": s.dt_areas[i],
                "bbox": [float(v) for v in mask_utils.toBbox(rle)],
                "iscrowd": 0,
            }
            for k in extra_keys:
                ann[k] = s.extra[f"dt_{k}"][i]
            dt_anns.append(ann)
    img_list = list(images.values())
    cat_list = [{"id": c} for c in sorted(cats)]
    coco_gt, coco_dt = COCO(), COCO()
    coco_gt.dataset = {"images": img_list, "categories": cat_list, "annotations": gt_anns}
    coco_dt.dataset = {"images": img_list, "categories": cat_list, "annotations": dt_anns}
    with contextlib.redirect_stdout(io.StringIO()):  # createIndex prints
        coco_gt.createIndex()
        coco_dt.createIndex()
    return coco_gt, coco_dt


def run_cocoeval(
    coco_gt: COCO, coco_dt: COCO, max_dets: int = 100, eval_cls: type[COCOeval] = COCOeval
) -> dict[str, float]:
    """Run ``eval_cls`` (segm) and return ``{STAT_NAME: value}``."""
    if not coco_gt.dataset["images"]:
        return {k: -1.0 for k in STAT_NAMES}
    ev = eval_cls(coco_gt, coco_dt, iouType="segm")
    ev.params.maxDets = [1, 10, max_dets]
    with contextlib.redirect_stdout(io.StringIO()):
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {k: float(v) for k, v in zip(STAT_NAMES, ev.stats[: len(STAT_NAMES)])}


class COCOMaskEvaluator(DatasetEvaluator):
    """COCO mask AP over find queries (see module docstring for keys)."""

    def __init__(
        self,
        prefix: str = "mask",
        max_dets: int = 100,
        crowded_thresholds: Sequence[int] = (),
        gather_fn: GatherFn | None = None,
    ) -> None:
        super().__init__(prefix, crowded_thresholds, gather_fn)
        self.max_dets = max_dets

    def summarize(self, pred: QueryPrediction, target: QueryTarget) -> CocoQuerySummary:
        return summarize_coco(pred, target, self.max_dets)

    def compute(self, records: Sequence[QueryRecord]) -> dict[str, float]:
        coco_gt, coco_dt = build_coco(records)
        return run_cocoeval(coco_gt, coco_dt, self.max_dets)
