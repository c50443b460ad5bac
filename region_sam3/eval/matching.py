"""mIoU of matched masks, with and without a score threshold.

Per (image, prompted category), in the original frame: the detections labelled with the
category (the image's top-K, see ``postprocess``) against its non-crowd GT.

* Thresholded: keep detections with ``score >= score_threshold``, solve the assignment
  maximising total IoU (``scipy.optimize.linear_sum_assignment``) and give every GT the IoU of
  its match (0 when unmatched: a missed object costs as much as a wrong one).
* Threshold-free (``*_topk``): every GT gets the IoU of its best-overlapping detection among the
  top-K, whatever its score, so a well-segmenting but under-confident model does not read as
  "every mask wrong".

Means are over all GT instances of the dataset (images with many objects weigh more).

Keys (prefix ``"miou"``): ``mIoU`` (thresholded, unmatched = 0), ``matched_IoU`` (thresholded,
matched pairs only), ``mIoU_topk`` (threshold-free), ``num_gt``, ``num_unmatched_pred`` (kept
detections left without GT: false positives at this threshold), and with ``boundary=True``
``mBoundaryIoU`` (Boundary IoU of the thresholded pairs, unmatched = 0). NaN without GT.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pycocotools.mask as mask_utils
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from region_sam3.eval.base import DatasetEvaluator, GatherFn, ImageRecord
from region_sam3.eval.types import ImageDetections, ImageGroundTruth


def mask_iou_matrix(a: Tensor, b: Tensor) -> Tensor:
    """IoU between every pair of bool masks.

    Args:
        a: ``[P, H, W]`` bool.  b: ``[T, H, W]`` bool.
    Returns:
        ``[P, T]`` float64 IoU (0 where both masks are empty).
    """
    if a.shape[0] == 0 or b.shape[0] == 0:
        return torch.zeros(a.shape[0], b.shape[0], dtype=torch.float64)
    fa = a.reshape(a.shape[0], -1).float()
    fb = b.reshape(b.shape[0], -1).float()
    # float32 sums of 0/1 are exact up to 2^24 pixels (> 1008^2 * 16).
    inter = (fa @ fb.T).double()
    union = fa.sum(1).double()[:, None] + fb.sum(1).double()[None, :] - inter
    return torch.where(union > 0, inter / union.clamp_min(1), torch.zeros_like(inter))


def hungarian_match(iou: Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows/cols of the max-total-IoU assignment, pairs with IoU 0 dropped (they match nothing).

    Args:
        iou: ``[P, T]`` IoU matrix.
    Returns:
        ``(pred_idx [M], gt_idx [M])`` int arrays.
    """
    iou = np.asarray(iou, dtype=np.float64)
    if iou.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    rows, cols = linear_sum_assignment(iou, maximize=True)
    ok = iou[rows, cols] > 0
    return rows[ok].astype(np.int64), cols[ok].astype(np.int64)


@dataclass
class CategoryGroup:
    """Detections and non-crowd GT of one (image, prompted category)."""

    dt_index: np.ndarray  # [P] indices into the image's detections, by descending score
    gt_rles: list[dict]
    iou: np.ndarray  # [P, T]


def category_groups(dets: ImageDetections, gt: ImageGroundTruth) -> list[CategoryGroup]:
    """One group per prompted category (RLE IoU, pycocotools)."""
    groups = []
    for c in gt.prompted_category_ids:
        dt_index = np.flatnonzero(dets.labels == c)
        gt_rles = [a["segmentation"] for a in gt.annotations
                   if int(a["category_id"]) == c and not a.get("iscrowd", 0)]
        iou = rle_iou_matrix([dets.rles[i] for i in dt_index], gt_rles)
        groups.append(CategoryGroup(dt_index, gt_rles, iou))
    return groups


def rle_iou_matrix(dt_rles: list[dict], gt_rles: list[dict]) -> np.ndarray:
    """``[P, T]`` IoU between COCO RLEs (pycocotools, run-length arithmetic: much cheaper
    than dense masks at 1008^2)."""
    if not dt_rles or not gt_rles:
        return np.zeros((len(dt_rles), len(gt_rles)))
    return np.asarray(mask_utils.iou(dt_rles, gt_rles, [0] * len(gt_rles)), dtype=np.float64)


@dataclass
class MatchSummary:
    gt_iou: list[float]  # one per non-crowd GT, thresholded Hungarian, 0 when unmatched
    gt_best_iou: list[float]  # one per non-crowd GT, best detection among the top-K
    gt_boundary_iou: list[float] | None
    num_unmatched_pred: int


def _pair_boundary_iou(dt: list[dict], gt: list[dict]) -> list[float]:
    from region_sam3.eval.boundary import rle_boundaries

    bd, bg = rle_boundaries(dt), rle_boundaries(gt)
    inter = [float(mask_utils.area(mask_utils.merge([a, b], intersect=True))) for a, b in zip(bd, bg)]
    union = [float(mask_utils.area(mask_utils.merge([a, b]))) for a, b in zip(bd, bg)]
    return [i / u if u > 0 else 1.0 for i, u in zip(inter, union)]


def match_image(
    dets: ImageDetections, gt: ImageGroundTruth, score_threshold: float | None,
    boundary: bool = False,
) -> MatchSummary:
    gt_iou, best, biou, unmatched = [], [], [], 0
    for g in category_groups(dets, gt):
        n_gt = len(g.gt_rles)
        best.extend(g.iou.max(0).tolist() if g.iou.shape[0] else [0.0] * n_gt)
        keep = np.ones(len(g.dt_index), dtype=bool)
        if score_threshold is not None:
            keep = dets.scores[g.dt_index] >= score_threshold
        iou = g.iou[keep]
        rows, cols = hungarian_match(iou)
        per = np.zeros(n_gt)
        per[cols] = iou[rows, cols]
        gt_iou.extend(per.tolist())
        unmatched += int(keep.sum()) - len(rows)
        if boundary:
            per_b = np.zeros(n_gt)
            kept = g.dt_index[keep]
            per_b[cols] = _pair_boundary_iou([dets.rles[kept[r]] for r in rows],
                                             [g.gt_rles[c] for c in cols])
            biou.extend(per_b.tolist())
    return MatchSummary(gt_iou, best, biou if boundary else None, unmatched)


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


class MatchedIoUEvaluator(DatasetEvaluator):
    """mIoU of matched masks (see module docstring)."""

    def __init__(
        self,
        prefix: str = "miou",
        score_threshold: float | None = 0.5,
        boundary: bool = False,
        crowded_thresholds: Sequence[int] = (),
        gather_fn: GatherFn | None = None,
        broadcast_fn=None,
    ) -> None:
        super().__init__(prefix, crowded_thresholds, gather_fn, broadcast_fn)
        self.score_threshold = score_threshold
        self.boundary = boundary

    def summarize(self, dets: ImageDetections, gt: ImageGroundTruth) -> MatchSummary:
        return match_image(dets, gt, self.score_threshold, self.boundary)

    def compute(self, records: Sequence[ImageRecord]) -> dict[str, float]:
        ious = [v for r in records for v in r.data.gt_iou]
        out = {
            "mIoU": _mean(ious),
            "matched_IoU": _mean([v for v in ious if v > 0]),
            "mIoU_topk": _mean([v for r in records for v in r.data.gt_best_iou]),
            "num_gt": float(len(ious)),
            "num_unmatched_pred": float(sum(r.data.num_unmatched_pred for r in records)),
        }
        if self.boundary:
            out["mBoundaryIoU"] = _mean([v for r in records for v in r.data.gt_boundary_iou])
        return out
