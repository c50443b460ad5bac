"""Evaluation suite (DESIGN §7), COCO-scale and in SAM3's own semantics.

Pipeline per evaluation batch (see ``region_sam3.lit.module``)::

    out = model(batch)                                   # final outputs (+ pred_masks_iter{t})
    post = PostProcessor(max_dets_per_image=100); pool = DetectionPool(100, post)
    cands = post.select(out, BatchLayout.from_batch(batch))  # top-K, low-res logits on device
    pool.add(cands, ground_truth_from_batch(batch))     # per-image top-K across batches
    evaluators.process(*pool.pop_finished(batch.image_ids.tolist()))
    ...
    evaluators.process(*pool.flush()); metrics = evaluators.evaluate()  # collective under DDP

Post-processing (``postprocess``) keeps the top-K detections over all prompts of an image
(merged across batches by ``DetectionPool`` on low-res logits), resizes only the final K masks to the original image size and RLE-encodes them on the logits' device;
evaluators (``COCOMaskEvaluator``, ``BoundaryAPEvaluator``, ``CGF1Evaluator``,
``MatchedIoUEvaluator``, ``StabilityEvaluator``, ``DistillationEvaluator``) consume the per-image
RLE detections and COCO ground truth (crowd regions included) in the original frame.
"""

from collections.abc import Sequence
from typing import Any

import torch

from region_sam3.eval.base import (
    DatasetEvaluator,
    EvaluatorList,
    ImageRecord,
    all_gather_objects,
    broadcast_from_main,
    gather_to_main,
    split_by_instance_count,
)
from region_sam3.eval.boundary import (
    BoundaryAPEvaluator,
    boundary_iou,
    boundary_width,
    mask_to_boundary,
    rle_boundaries,
)
from region_sam3.eval.candidates import ImageCandidates
from region_sam3.eval.cgf1 import CGF1Evaluator
from region_sam3.eval.coco_ap import COCOMaskEvaluator
from region_sam3.eval.config import EvaluationConfig
from region_sam3.eval.distill_metrics import (
    DistillationEvaluator,
    mean_cosine,
    zero_shot_accuracy,
)
from region_sam3.eval.ground_truth import ground_truth_from_batch
from region_sam3.eval.masks import encode_masks, stability_score
from region_sam3.eval.matching import MatchedIoUEvaluator, hungarian_match, mask_iou_matrix
from region_sam3.eval.pool import DetectionPool
from region_sam3.eval.postprocess import BatchLayout, PostProcessor
from region_sam3.eval.stability import StabilityEvaluator, perturbation_stability
from region_sam3.eval.types import ImageDetections, ImageGroundTruth, IterationMasks, RegionPairs

__all__ = [
    "BatchLayout",
    "BoundaryAPEvaluator",
    "CGF1Evaluator",
    "COCOMaskEvaluator",
    "DatasetEvaluator",
    "DetectionPool",
    "DistillationEvaluator",
    "EvaluationConfig",
    "EvaluatorList",
    "ImageCandidates",
    "ImageDetections",
    "ImageGroundTruth",
    "ImageRecord",
    "IterationMasks",
    "MatchedIoUEvaluator",
    "PostProcessor",
    "RegionPairs",
    "StabilityEvaluator",
    "all_gather_objects",
    "boundary_iou",
    "boundary_width",
    "broadcast_from_main",
    "build_default_evaluators",
    "encode_masks",
    "gather_to_main",
    "ground_truth_from_batch",
    "hungarian_match",
    "mask_iou_matrix",
    "mask_to_boundary",
    "mean_cosine",
    "perturbation_stability",
    "rle_boundaries",
    "split_by_instance_count",
    "stability_score",
    "zero_shot_accuracy",
]


def build_default_evaluators(
    config: EvaluationConfig | None = None,
    *,
    distill_text_embeds: torch.Tensor | None = None,
    distill_category_ids: Sequence[int] = (),
    **overrides: Any,
) -> EvaluatorList:
    """The §7 suite: mask AP, Boundary AP, cgF1, matched mIoU and stability score, plus the
    distillation metrics when distillation is on.

    Args:
        config: the evaluation knobs (None: `EvaluationConfig()` defaults).
        distill_text_embeds: the teacher's category-name embeddings `[K,D]` (row k is
            `distill_category_ids[k]`); given, `DistillationEvaluator` joins the suite.
        overrides: `model.evaluation`-style keys applied on top of `config` (e.g.
            `crowded_thresholds=(4,)`; `max_dets` is the old name of `max_dets_per_image`).
    """
    cfg = (config or EvaluationConfig()).updated(overrides)
    thresholds, max_dets = cfg.crowded_thresholds, cfg.max_dets_per_image
    evs: list[DatasetEvaluator] = [
        COCOMaskEvaluator(max_dets=max_dets, crowded_thresholds=thresholds)
    ]
    if cfg.boundary:
        evs.append(BoundaryAPEvaluator(max_dets=max_dets, crowded_thresholds=thresholds))
    if cfg.cgf1:
        evs.append(CGF1Evaluator(crowded_thresholds=thresholds))
    evs.append(
        MatchedIoUEvaluator(score_threshold=cfg.score_threshold, crowded_thresholds=thresholds)
    )
    evs.append(StabilityEvaluator(score_threshold=cfg.score_threshold))
    if distill_text_embeds is not None:
        evs.append(DistillationEvaluator(distill_text_embeds.cpu(), list(distill_category_ids)))
    return EvaluatorList(evs)
