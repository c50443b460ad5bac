"""Evaluation suite (DESIGN §7): COCO mask AP, Boundary AP, matched mIoU, stability,
perturbation stability, distillation metrics, per-iteration and crowded-split reporting."""

from region_sam3.eval.base import (
    DatasetEvaluator,
    EvaluatorList,
    QueryRecord,
    all_gather_objects,
    image_instance_counts,
    split_by_instance_count,
)
from region_sam3.eval.boundary import (
    BoundaryAPEvaluator,
    boundary_iou,
    boundary_width,
    mask_to_boundary,
)
from region_sam3.eval.coco_ap import COCOMaskEvaluator
from region_sam3.eval.distill_metrics import (
    DistillationEvaluator,
    mean_cosine,
    zero_shot_accuracy,
)
from region_sam3.eval.matching import MatchedIoUEvaluator, hungarian_match, mask_iou_matrix
from region_sam3.eval.report import (
    metrics_to_markdown,
    per_iteration_markdown,
    plot_per_iteration,
    save_metrics_json,
    write_report,
)
from region_sam3.eval.stability import (
    StabilityEvaluator,
    perturbation_stability,
    stability_score,
)
from region_sam3.eval.types import QueryPrediction, QueryTarget

__all__ = [
    "BoundaryAPEvaluator",
    "COCOMaskEvaluator",
    "DatasetEvaluator",
    "DistillationEvaluator",
    "EvaluatorList",
    "MatchedIoUEvaluator",
    "QueryPrediction",
    "QueryRecord",
    "QueryTarget",
    "StabilityEvaluator",
    "all_gather_objects",
    "boundary_iou",
    "boundary_width",
    "build_default_evaluators",
    "hungarian_match",
    "image_instance_counts",
    "mask_iou_matrix",
    "mask_to_boundary",
    "mean_cosine",
    "metrics_to_markdown",
    "per_iteration_markdown",
    "perturbation_stability",
    "plot_per_iteration",
    "save_metrics_json",
    "split_by_instance_count",
    "stability_score",
    "write_report",
    "zero_shot_accuracy",
]


def build_default_evaluators(
    crowded_thresholds: tuple[int, ...] = (10,),
    boundary: bool = True,
    score_threshold: float = 0.5,
) -> EvaluatorList:
    """The §7 mask suite: mask AP, Boundary AP, matched mIoU and stability score."""
    evs: list[DatasetEvaluator] = [COCOMaskEvaluator(crowded_thresholds=crowded_thresholds)]
    if boundary:
        evs.append(BoundaryAPEvaluator(crowded_thresholds=crowded_thresholds))
    evs.append(
        MatchedIoUEvaluator(score_threshold=score_threshold, crowded_thresholds=crowded_thresholds)
    )
    evs.append(StabilityEvaluator(score_threshold=score_threshold))
    return EvaluatorList(evs)
