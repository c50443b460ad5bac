"""Evaluation suite (DESIGN §7): COCO mask AP, Boundary AP, matched mIoU, stability,
perturbation stability, distillation metrics, per-iteration and crowded-split reporting.

Wiring in a LightningModule (evaluate() is collective under DDP and returns the same dict on
every rank, so call it on all ranks and log without ``sync_dist``)::

    def on_validation_epoch_start(self):
        self.evaluator.reset()            # self.evaluator = build_default_evaluators()

    def validation_step(self, batch, batch_idx):
        out = self.model(batch)
        targets = [QueryTarget(image_id=..., category_id=..., masks=gt_masks_q, ...) for q ...]
        per_t = {t: [QueryPrediction(masks=logits_t[q], scores=scores[q]) for q ...]
                 for t, logits_t in enumerate(out["pred_masks_per_iter"])}
        self.evaluator.process(per_t, targets)  # or a plain list for final masks only

    def on_validation_epoch_end(self):
        metrics = self.evaluator.evaluate()
        self.log_dict({f"val/{k}": v for k, v in metrics.items()})
"""

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
