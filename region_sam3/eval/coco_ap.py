"""COCO mask AP: pycocotools ``COCOeval`` (iouType ``segm``, maxDets 1/10/100) fed exactly as a
COCO results file would be: ground truth in the original frame with its ``area`` and
``iscrowd`` (crowd regions are ignore regions, detections on them are not false positives),
detections through ``COCO.loadRes``. AP is never re-implemented here.

Keys (``prefix`` default ``"mask"``): ``AP AP50 AP75 AP_S AP_M AP_L AR1 AR10 AR100`` in [0, 1];
NaN where COCO has nothing to average (COCO prints -1, e.g. ``AP_S`` without small GT, or an
empty group), plus the counts ``num_images``, ``num_gt`` (non-crowd) and ``num_dets``.
"""

from __future__ import annotations

import contextlib
import copy
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pycocotools.mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from region_sam3.eval.base import DatasetEvaluator, GatherFn, ImageRecord, nan_if_empty
from region_sam3.eval.types import ImageDetections, ImageGroundTruth

# Positions in COCOeval.stats (segm / bbox summarize()).
STAT_NAMES = ("AP", "AP50", "AP75", "AP_S", "AP_M", "AP_L", "AR1", "AR10", "AR100")


@dataclass
class CocoImageSummary:
    """What COCOeval needs of one image: its record, GT annotations and results."""

    image: dict[str, int]
    gt: list[dict[str, Any]]
    dt: list[dict[str, Any]]
    categories: tuple[int, ...]
    extra: dict[str, Any] = field(default_factory=dict)


_GEOMETRY_CACHE: list[tuple[list, np.ndarray, np.ndarray]] = []
_GEOMETRY_CACHE_SIZE = 16


def rle_geometry(rles: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """``(area [K] uint32, bbox [K, 4] float64)`` of RLEs: what ``COCO.loadRes`` computes per
    result (``maskUtils.area`` / ``toBbox``, the same C functions on the same RLEs).

    ``loadRes`` decodes every RLE string twice per evaluation group; done here once per list
    of RLEs instead. The mask and boundary evaluators summarise the *same* list object of an
    image view, so the last few lists are memoised by identity (a strong reference is held,
    so an ``id`` cannot be reused while cached; RLE lists are never mutated).
    """
    for cached, area, bbox in _GEOMETRY_CACHE:
        if cached is rles:
            return area, bbox
    if rles:
        area, bbox = mask_utils.area(rles), mask_utils.toBbox(rles)
    else:
        area, bbox = np.zeros(0, np.uint32), np.zeros((0, 4))
    _GEOMETRY_CACHE.insert(0, (rles, area, bbox))
    del _GEOMETRY_CACHE[_GEOMETRY_CACHE_SIZE:]
    return area, bbox


def summarize_coco(dets: ImageDetections, gt: ImageGroundTruth) -> CocoImageSummary:
    """COCO results (``image_id, category_id, segmentation, score``) + GT of one image; the
    results' ``area`` / ``bbox`` (as ``loadRes`` would set them) in ``extra``."""
    dt = [
        {"image_id": dets.image_id, "category_id": int(c), "segmentation": rle,
         "score": float(s)}
        for c, rle, s in zip(dets.labels, dets.rles, dets.scores)
    ]
    area, bbox = rle_geometry(dets.rles)
    gts = [{**a, "image_id": gt.image_id} for a in gt.annotations]
    cats = set(gt.prompted_category_ids) | {int(c) for c in dets.labels}
    return CocoImageSummary(
        image={"id": gt.image_id, "height": gt.height, "width": gt.width},
        gt=gts, dt=dt, categories=tuple(sorted(cats)),
        extra={"dt_area": area, "dt_bbox": bbox},
    )


def load_results(coco_gt: COCO, anns: list[dict[str, Any]], area: np.ndarray,
                 bbox: np.ndarray) -> COCO:
    """``coco_gt.loadRes(anns)`` for RLE ``segmentation`` results (what that branch of
    pycocotools' ``loadRes`` does, step for step), with each result's ``area`` and ``bbox``
    given (``rle_geometry``) instead of decoded again. Mutates ``anns`` like ``loadRes``."""
    img_ids = {a["image_id"] for a in anns}
    if not img_ids <= set(coco_gt.getImgIds()):
        raise ValueError(f"results of images {sorted(img_ids - set(coco_gt.getImgIds()))} "
                         "not in the ground truth")
    res = COCO()
    res.dataset["info"] = copy.deepcopy(coco_gt.dataset.get("info", {}))
    res.dataset["images"] = list(coco_gt.dataset["images"])
    res.dataset["categories"] = copy.deepcopy(coco_gt.dataset["categories"])
    for i, ann in enumerate(anns):
        ann["area"] = area[i]
        ann["bbox"] = bbox[i]
        ann["id"] = i + 1
        ann["iscrowd"] = 0
    res.dataset["annotations"] = anns
    res.createIndex()
    return res


def build_coco(records: Sequence[ImageRecord]) -> tuple[COCO, COCO]:
    """In-memory (gt, dt) COCO objects; dt as ``COCO.loadRes`` makes it from a results file
    (``load_results``: the same objects, areas and boxes precomputed by ``summarize_coco``).

    GT annotation ids are renumbered from 1 (COCOeval reads id 0 as "unmatched").
    """
    images, cats, gt_anns, dt_anns, areas, bboxes = [], set(), [], [], [], []
    for r in records:
        s: CocoImageSummary = r.data
        images.append(s.image)
        cats.update(s.categories)
        for a in s.gt:
            gt_anns.append({**a, "id": len(gt_anns) + 1})
        dt_anns.extend(copy.copy(d) for d in s.dt)  # loadRes writes ids/areas into the dicts
        if "dt_area" in s.extra:
            areas.append(s.extra["dt_area"])
            bboxes.append(s.extra["dt_bbox"])
    coco_gt = COCO()
    coco_gt.dataset = {"images": images, "categories": [{"id": c} for c in sorted(cats)],
                       "annotations": gt_anns}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints
        coco_gt.createIndex()
        if dt_anns and len(areas) == len(records):
            coco_dt = load_results(coco_gt, dt_anns, np.concatenate(areas),
                                   np.concatenate(bboxes))
        elif dt_anns:
            coco_dt = coco_gt.loadRes(dt_anns)
        else:
            coco_dt = COCO()
            coco_dt.dataset = {"images": images, "categories": coco_gt.dataset["categories"],
                               "annotations": []}
            coco_dt.createIndex()
    return coco_gt, coco_dt


def run_cocoeval(
    coco_gt: COCO, coco_dt: COCO, max_dets: int = 100, eval_cls: type[COCOeval] = COCOeval
) -> dict[str, float]:
    """Run ``eval_cls`` (segm) and return ``{STAT_NAME: value}`` (COCO's -1 -> NaN)."""
    if not coco_gt.dataset["images"]:
        return {k: math.nan for k in STAT_NAMES}
    ev = eval_cls(coco_gt, coco_dt, iouType="segm")
    ev.params.maxDets = [1, 10, max_dets]
    with contextlib.redirect_stdout(io.StringIO()):
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {k: (math.nan if v < 0 else float(v))
            for k, v in zip(STAT_NAMES, ev.stats[: len(STAT_NAMES)])}


def coco_counts(records: Sequence[ImageRecord]) -> dict[str, float]:
    return {
        "num_images": float(len(records)),
        "num_gt": float(sum(1 for r in records for a in r.data.gt if not a.get("iscrowd", 0))),
        "num_dets": float(sum(len(r.data.dt) for r in records)),
    }


class COCOMaskEvaluator(DatasetEvaluator):
    """COCO mask AP over per-image detections (see module docstring for keys)."""

    def __init__(
        self,
        prefix: str = "mask",
        max_dets: int = 100,
        crowded_thresholds: Sequence[int] = (),
        gather_fn: GatherFn | None = None,
        broadcast_fn=None,
    ) -> None:
        super().__init__(prefix, crowded_thresholds, gather_fn, broadcast_fn)
        self.max_dets = max_dets

    def summarize(self, dets: ImageDetections, gt: ImageGroundTruth) -> CocoImageSummary:
        return summarize_coco(dets, gt)

    def compute(self, records: Sequence[ImageRecord]) -> dict[str, float]:
        coco_gt, coco_dt = build_coco(records)
        out = run_cocoeval(coco_gt, coco_dt, self.max_dets)
        return nan_if_empty({**out, **coco_counts(records)}, not records)
