"""mIoU of Hungarian-matched masks.

Per query: keep predictions with ``score >= score_threshold`` (at most ``max_keep``, by score),
compute the ``[P, T]`` IoU matrix with the GT, solve the assignment maximising total IoU
(``scipy.optimize.linear_sum_assignment``), and give every non-crowd GT the IoU of its match
(0 when unmatched: a missed object costs as much as a wrong one). ``mIoU`` is the mean over all
GT instances of the dataset, so images with many objects weigh more, as in instance metrics.

Keys (prefix ``"miou"``): ``mIoU`` (over GT, unmatched = 0), ``matched_IoU`` (over matched
pairs only), ``num_gt``, ``num_unmatched_pred`` (kept predictions left without GT: false
positives at this threshold), and with ``boundary=True`` ``mBoundaryIoU`` (Boundary IoU of the
same pairs, unmatched = 0).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pycocotools.mask as mask_utils
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from region_sam3.eval.base import DatasetEvaluator, GatherFn, QueryRecord
from region_sam3.eval.boundary import mask_to_boundary
from region_sam3.eval.types import QueryPrediction, QueryTarget, keep_top


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
class MatchSummary:
    gt_iou: list[float]  # one per non-crowd GT, 0 when unmatched
    gt_boundary_iou: list[float] | None
    num_unmatched_pred: int


def rle_iou_matrix(dt_rles: list[dict], gt_rles: list[dict]) -> np.ndarray:
    """``[P, T]`` IoU between COCO RLEs (pycocotools, run-length arithmetic: much cheaper
    than dense masks at 1008^2)."""
    if not dt_rles or not gt_rles:
        return np.zeros((len(dt_rles), len(gt_rles)))
    return np.asarray(mask_utils.iou(dt_rles, gt_rles, [0] * len(gt_rles)), dtype=np.float64)


def match_query(
    pred: QueryPrediction,
    target: QueryTarget,
    keep: Tensor,
    boundary: bool = False,
) -> MatchSummary:
    """Hungarian-match kept predictions ``keep`` ([K] indices) to the non-crowd GT."""
    noncrowd = np.flatnonzero(~target.crowd_flags())
    gt_rles = [target.rles()[j] for j in noncrowd]
    iou = rle_iou_matrix(pred.rles(keep), gt_rles)
    rows, cols = hungarian_match(iou)
    gt_iou = np.zeros(len(gt_rles))
    gt_iou[cols] = iou[rows, cols]
    gt_biou = None
    if boundary:
        gt_biou_arr = np.zeros(len(gt_rles))
        if len(rows):
            bp = mask_to_boundary(pred.binary_masks(keep[torch.from_numpy(rows)]))
            bg = mask_to_boundary(target.binary_masks()[torch.from_numpy(noncrowd[cols])])
            inter = (bp & bg).flatten(1).sum(1).double()
            union = (bp | bg).flatten(1).sum(1).double()
            gt_biou_arr[cols] = torch.where(union > 0, inter / union.clamp_min(1), 1.0).numpy()
        gt_biou = gt_biou_arr.tolist()
    return MatchSummary(
        gt_iou=gt_iou.tolist(),
        gt_boundary_iou=gt_biou,
        num_unmatched_pred=int(len(keep) - len(rows)),
    )


class MatchedIoUEvaluator(DatasetEvaluator):
    """mIoU of Hungarian-matched masks (see module docstring)."""

    def __init__(
        self,
        prefix: str = "miou",
        score_threshold: float | None = 0.5,
        max_keep: int | None = 100,
        boundary: bool = False,
        crowded_thresholds: Sequence[int] = (),
        gather_fn: GatherFn | None = None,
    ) -> None:
        super().__init__(prefix, crowded_thresholds, gather_fn)
        self.score_threshold = score_threshold
        self.max_keep = max_keep
        self.boundary = boundary

    def summarize(self, pred: QueryPrediction, target: QueryTarget) -> MatchSummary:
        keep = keep_top(pred.scores, self.score_threshold, self.max_keep)
        return match_query(pred, target, keep, self.boundary)

    def compute(self, records: Sequence[QueryRecord]) -> dict[str, float]:
        ious = np.array([v for r in records for v in r.data.gt_iou], dtype=np.float64)
        matched = ious[ious > 0]
        out = {
            "mIoU": float(ious.mean()) if ious.size else float("nan"),
            "matched_IoU": float(matched.mean()) if matched.size else float("nan"),
            "num_gt": float(ious.size),
            "num_unmatched_pred": float(sum(r.data.num_unmatched_pred for r in records)),
        }
        if self.boundary:
            b = np.array([v for r in records for v in r.data.gt_boundary_iou], dtype=np.float64)
            out["mBoundaryIoU"] = float(b.mean()) if b.size else float("nan")
        return out
