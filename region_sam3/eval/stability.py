"""Mask stability: SAM's stability score and perturbation (input jitter) stability.

SAM stability score of one mask: ``|l > +delta| / |l > -delta|`` on mask logits ``l`` with
``delta = 1`` -- the IoU between the mask thresholded slightly above and slightly below 0. The
formula and the empty-mask convention (score 1.0 when nothing exceeds ``-delta``) follow
``sam3.sam.mask_decoder.MaskDecoder._get_stability_scores``; that is a method reading its delta
from the decoder instance, so it is re-stated here as a function (parity is tested).
Probabilities are accepted too: ``l > delta`` is ``p > sigmoid(delta)``.

Perturbation stability (``perturbation_stability``): model-agnostic. Predict on an image and on
small jitters of it (translations by a few pixels, slight rescales), map the jittered
predictions back to the original frame, and report the Hungarian-matched mIoU between the two
sets of kept masks (unmatched original masks count 0).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from region_sam3.eval.base import DatasetEvaluator, GatherFn, ImageRecord
from region_sam3.eval.masks import MaskKind
from region_sam3.eval.matching import category_groups, hungarian_match, mask_iou_matrix
from region_sam3.eval.types import ImageDetections, ImageGroundTruth


@dataclass
class StabilitySummary:
    scores: list[float]  # stability of detections with score >= threshold
    matched: list[float]  # stability of the best-IoU detection of each non-crowd GT


class StabilityEvaluator(DatasetEvaluator):
    """SAM stability score of the evaluated masks (computed per kept mask in the original
    frame by ``postprocess``).

    Keys (prefix ``"stability"``): ``score`` / ``num_masks`` over detections with
    ``score >= score_threshold``; threshold-free ``score_topk`` / ``num_gt_matched``: the
    stability of the best-overlapping detection (IoU > 0, among the top-K of the GT's
    category) of each non-crowd GT. NaN when there is nothing to average.
    """

    def __init__(
        self,
        prefix: str = "stability",
        score_threshold: float | None = 0.5,
        crowded_thresholds: Sequence[int] = (),
        gather_fn: GatherFn | None = None,
        broadcast_fn=None,
    ) -> None:
        super().__init__(prefix, crowded_thresholds, gather_fn, broadcast_fn)
        self.score_threshold = score_threshold

    def summarize(self, dets: ImageDetections, gt: ImageGroundTruth) -> StabilitySummary:
        keep = np.ones(len(dets), dtype=bool)
        if self.score_threshold is not None:
            keep = dets.scores >= self.score_threshold
        matched = []
        for g in category_groups(dets, gt):
            if g.iou.size == 0:
                continue
            best = g.iou.argmax(0)
            ok = g.iou[best, np.arange(g.iou.shape[1])] > 0
            matched.extend(dets.stability[g.dt_index[best[ok]]].tolist())
        return StabilitySummary(dets.stability[keep].tolist(), matched)

    def compute(self, records: Sequence[ImageRecord]) -> dict[str, float]:
        s = np.array([v for r in records for v in r.data.scores], dtype=np.float64)
        m = np.array([v for r in records for v in r.data.matched], dtype=np.float64)
        return {
            "score": float(s.mean()) if s.size else float("nan"),
            "num_masks": float(s.size),
            "score_topk": float(m.mean()) if m.size else float("nan"),
            "num_gt_matched": float(m.size),
        }


def binarize(masks: Tensor, kind: MaskKind) -> Tensor:
    """Threshold ``[..., H, W]`` masks into bool on CPU (logits > 0, probs > 0.5)."""
    masks = masks.detach()
    if kind == "logits":
        out = masks > 0
    elif kind == "probs":
        out = masks > 0.5
    elif kind == "binary":
        out = masks.bool()
    else:
        raise ValueError(f"unknown mask kind {kind!r}")
    return out.cpu()


def keep_top(scores: Tensor, score_threshold: float | None, max_keep: int | None) -> Tensor:
    """Indices ``[K]`` with score >= threshold, highest ``max_keep``, by score (stable sort)."""
    scores = scores.detach().float().cpu()
    order = torch.sort(scores, descending=True, stable=True).indices
    if score_threshold is not None:
        order = order[scores[order] >= score_threshold]
    if max_keep is not None:
        order = order[:max_keep]
    return order


# ---------------------------------------------------------------------------------------------
# Perturbation stability
# ---------------------------------------------------------------------------------------------

PredictFn = Callable[[Tensor], tuple[Tensor, Tensor]]
"""``image [C, H, W] -> (masks [Q, h, w], scores [Q])``; masks at any resolution."""


def translate(x: Tensor, dy: int, dx: int) -> Tensor:
    """Shift ``[..., H, W]`` content by ``(dy, dx)`` pixels (down/right positive), zero fill."""
    h, w = x.shape[-2:]
    out = torch.zeros_like(x)
    if abs(dy) >= h or abs(dx) >= w:
        return out
    ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    out[..., yd, xd] = x[..., ys, xs]
    return out


def _to_frame(masks: Tensor, kind: MaskKind, size: tuple[int, int]) -> Tensor:
    """``[Q, h, w]`` -> ``[Q, H, W]`` bool at ``size`` (bilinear on soft masks)."""
    if masks.shape[-2:] != size and masks.shape[0] > 0:
        soft = masks.float() if kind != "binary" else masks.float() - 0.5
        soft = F.interpolate(soft[None], size=size, mode="bilinear", align_corners=False)[0]
        masks = soft
        kind = "logits" if kind != "probs" else "probs"
    return binarize(masks, kind)


def _matched_miou(ref: Tensor, other: Tensor) -> float | None:
    """Mean over ``ref`` masks of the IoU with their Hungarian match in ``other`` (0 if none)."""
    if ref.shape[0] == 0:
        return None
    iou = mask_iou_matrix(ref, other)
    rows, cols = hungarian_match(iou)
    per = np.zeros(ref.shape[0])
    per[rows] = iou.numpy()[rows, cols]
    return float(per.mean())


def perturbation_stability(
    predict_fn: PredictFn,
    images: Iterable[Tensor],
    shifts: Sequence[tuple[int, int]] = ((4, 0), (0, 4), (-4, -4)),
    scales: Sequence[float] = (0.9, 1.1),
    mask_kind: MaskKind = "logits",
    score_threshold: float | None = 0.5,
    max_keep: int | None = 100,
) -> dict[str, float]:
    """IoU of predictions under small input jitter, mapped back to the original frame.

    Shifts: the image is translated by ``(dy, dx)`` with zero fill, predictions are translated
    back, and both prediction sets are compared only inside the window visible in both frames
    (content pushed out of the image cannot be predicted). Scales: the image is resized by
    ``s`` (bilinear) and predictions are resized back to ``H x W``.

    Args:
        predict_fn: ``image [C, H, W] -> (masks [Q, h, w], scores [Q])``.
        images: iterable of ``[C, H, W]`` images.
        mask_kind: how to read the masks ``predict_fn`` returns.
    Returns:
        ``perturb/shift_mIoU``, ``perturb/scale_mIoU``, ``perturb/mIoU`` (all jitters), and
        ``perturb/num_images`` (images with at least one kept original mask; others skipped).
    """
    shift_vals: list[float] = []
    scale_vals: list[float] = []
    n_images = 0

    def kept(masks: Tensor, scores: Tensor, size: tuple[int, int]) -> Tensor:
        idx = keep_top(scores, score_threshold, max_keep)
        return _to_frame(masks.detach().cpu()[idx], mask_kind, size)

    with torch.no_grad():
        for img in images:
            size = (int(img.shape[-2]), int(img.shape[-1]))
            ref = kept(*predict_fn(img), size)
            if ref.shape[0] == 0:
                continue
            n_images += 1
            for dy, dx in shifts:
                out = translate(kept(*predict_fn(translate(img, dy, dx)), size), -dy, -dx)
                valid = translate(translate(torch.ones(size, dtype=torch.bool), dy, dx), -dy, -dx)
                v = _matched_miou(ref & valid, out & valid)
                if v is not None:
                    shift_vals.append(v)
            for s in scales:
                new = (max(1, round(size[0] * s)), max(1, round(size[1] * s)))
                scaled = F.interpolate(
                    img[None].float(), size=new, mode="bilinear", align_corners=False
                )[0]
                v = _matched_miou(ref, kept(*predict_fn(scaled), size))
                if v is not None:
                    scale_vals.append(v)

    def mean(v: list[float]) -> float:
        return float(np.mean(v)) if v else float("nan")

    return {
        "perturb/shift_mIoU": mean(shift_vals),
        "perturb/scale_mIoU": mean(scale_vals),
        "perturb/mIoU": mean(shift_vals + scale_vals),
        "perturb/num_images": float(n_images),
    }
