"""Boundary IoU and Boundary AP (Cheng et al., CVPR 2021).

Boundary band of a mask ``G``: ``G_d = G minus erode(G, d)``, the mask pixels within distance
``d`` of its contour, ``d = max(1, round(0.02 * sqrt(H^2 + W^2)))`` in pixels of the evaluated
frame. Erosion uses a ``(2d+1)^2`` square (= d iterations of a 3x3 kernel, as in the reference
implementation) and treats outside-the-image as background, so a mask cut by the border has
boundary there too. The bands of all masks of an image are computed in one batched operation
(``region_sam3.eval.bands``: bit-packed sliding AND on the host, max-pool on CUDA; exact, no
OpenCV needed), checked against the per-mask scipy filter and iterated 3x3 erosion in the tests.

    Boundary IoU(G, P) = |G_d ∩ P_d| / |G_d ∪ P_d|

Boundary AP -- the choice made here: the reference Boundary AP, i.e. ``COCOeval`` where the
dt/gt IoU is ``min(mask IoU, boundary IoU)`` for non-crowd GT (crowd GT keep mask IoU). We
chose AP over "mean Boundary IoU of matched pairs" because it is the number papers report and
is comparable with mask AP (same matching, thresholds and S/M/L buckets); the min with mask IoU
stops a prediction that only traces the outline from scoring. Mean Boundary IoU of Hungarian
matched pairs is available from ``MatchedIoUEvaluator(boundary=True)``.

Keys (prefix ``"boundary"``): same names as mask AP (``boundary/AP``, ``boundary/AP_S`` ...).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pycocotools.mask as mask_utils
from pycocotools.cocoeval import COCOeval
from torch import Tensor

from region_sam3.eval.bands import (
    DILATION_RATIO,
    bands_numpy,
    boundary_bands,
    boundary_width,
)
from region_sam3.eval.base import GatherFn, ImageRecord, nan_if_empty
from region_sam3.eval.coco_ap import (
    CocoImageSummary,
    COCOMaskEvaluator,
    build_coco,
    coco_counts,
    run_cocoeval,
    summarize_coco,
)
from region_sam3.eval.types import ImageDetections, ImageGroundTruth


def mask_to_boundary(masks: Tensor, dilation_ratio: float = DILATION_RATIO) -> Tensor:
    """Inner boundary band of bool masks.

    Args:
        masks: ``[N, H, W]`` (or ``[H, W]``) bool.
    Returns:
        bool tensor of the same shape on CPU: ``mask & ~erode(mask, d)``.
    """
    squeeze = masks.dim() == 2
    stack = (masks[None] if squeeze else masks).detach().cpu().bool()
    out = boundary_bands(stack, boundary_width(stack.shape[-2], stack.shape[-1], dilation_ratio))
    return out[0] if squeeze else out


def boundary_iou(a: Tensor, b: Tensor, dilation_ratio: float = DILATION_RATIO) -> float:
    """Boundary IoU of two ``[H, W]`` bool masks (1.0 when both bands are empty)."""
    ba = mask_to_boundary(a, dilation_ratio)
    bb = mask_to_boundary(b, dilation_ratio)
    union = (ba | bb).sum().item()
    if union == 0:
        return 1.0
    return (ba & bb).sum().item() / union


class BoundaryCOCOeval(COCOeval):
    """``COCOeval`` whose IoU is ``min(mask IoU, boundary IoU)`` for non-crowd GT.

    Annotations carry their boundary RLE under ``"boundary"``; everything else (matching,
    accumulate, summarize) is stock pycocotools.
    """

    def computeIoU(self, imgId: int, catId: int):  # noqa: N802 - pycocotools API
        p = self.params
        gt = self._gts[imgId, catId]
        dt = self._dts[imgId, catId]
        if len(gt) == 0 and len(dt) == 0:
            return []
        order = np.argsort([-d["score"] for d in dt], kind="mergesort")[: p.maxDets[-1]]
        dt = [dt[i] for i in order]
        iscrowd = [int(g["iscrowd"]) for g in gt]
        mask_ious = mask_utils.iou(
            [d["segmentation"] for d in dt], [g["segmentation"] for g in gt], iscrowd
        )
        if len(gt) == 0 or len(dt) == 0:
            return mask_ious
        band_ious = mask_utils.iou(
            [d["boundary"] for d in dt], [g["boundary"] for g in gt], iscrowd
        )
        ious = np.array(mask_ious, dtype=np.float64)
        crowd = np.asarray(iscrowd, dtype=bool)
        ious[:, ~crowd] = np.minimum(ious[:, ~crowd], np.asarray(band_ious)[:, ~crowd])
        return ious


def rle_boundaries(rles: list[dict], dilation_ratio: float = DILATION_RATIO) -> list[dict]:
    """Boundary bands of COCO RLE masks (all of one image size), as RLEs: decoded once
    (``K x H x W`` uint8, 30 MB for 100 masks at 640x480), bands of the whole stack at once."""
    if not rles:
        return []
    h, w = rles[0]["size"]
    arr = mask_utils.decode(rles)  # [H, W, K] uint8, Fortran order
    if arr.ndim == 2:  # pycocotools returns [H, W] for a single non-list RLE
        arr = arr[:, :, None]
    # The Fortran [H, W, K] array is a C-contiguous [K, W, H] stack (a square erodes alike
    # along either axis); its bands come back [K, W, H], i.e. Fortran [H, W, K] for encode.
    band = bands_numpy(arr.transpose(2, 1, 0), boundary_width(h, w, dilation_ratio))
    out = mask_utils.encode(band.transpose(2, 1, 0))
    for r in out:
        r["counts"] = r["counts"].decode("ascii")
    return out


class BoundaryAPEvaluator(COCOMaskEvaluator):
    """Boundary AP (reference definition, see module docstring); crowd GT are ignore regions
    matched by mask IoU, exactly as in mask AP."""

    def __init__(
        self,
        prefix: str = "boundary",
        max_dets: int = 100,
        dilation_ratio: float = DILATION_RATIO,
        crowded_thresholds: Sequence[int] = (),
        gather_fn: GatherFn | None = None,
        broadcast_fn=None,
    ) -> None:
        super().__init__(prefix, max_dets, crowded_thresholds, gather_fn, broadcast_fn)
        self.dilation_ratio = dilation_ratio

    def summarize(self, dets: ImageDetections, gt: ImageGroundTruth) -> CocoImageSummary:
        s = summarize_coco(dets, gt)
        if dets.boundaries is not None and dets.boundary_ratio == self.dilation_ratio:
            bands = dets.boundaries  # made by the post-processor next to the masks
        else:
            bands = rle_boundaries([d["segmentation"] for d in s.dt], self.dilation_ratio)
        for d, b in zip(s.dt, bands):
            d["boundary"] = b
        # `process` summarises every refinement iterate against the same GT object: its bands
        # are computed once per image, not once per iterate.
        if self._gt_cache[0] is not gt:
            self._gt_cache = (gt, rle_boundaries([a["segmentation"] for a in s.gt],
                                                 self.dilation_ratio))
        s.gt = [{**a, "boundary": b} for a, b in zip(s.gt, self._gt_cache[1])]
        return s

    def reset(self) -> None:
        super().reset()
        self._gt_cache: tuple[ImageGroundTruth | None, list[dict]] = (None, [])

    def compute(self, records: Sequence[ImageRecord]) -> dict[str, float]:
        coco_gt, coco_dt = build_coco(records)
        out = run_cocoeval(coco_gt, coco_dt, self.max_dets, eval_cls=BoundaryCOCOeval)
        return nan_if_empty({**out, **coco_counts(records)}, not records)
