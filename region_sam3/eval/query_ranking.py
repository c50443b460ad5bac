"""Does the per-query score single out the query that segments the object? (issue 18)

Presence ranks prompts (`eval/presence.py`); AP also needs the *queries* of a present prompt
ranked, the one whose mask covers an object above its duplicates and its empty queries. A
decoder whose queries collapsed onto one state gives every query of a prompt the same mask and
the same score: `spread` 0, `pair_iou` 1, `good_per_object` = Q. `QueryRanking` accumulates one
present prompt at a time (`process`) and summarises (`evaluate`); a statistic with no data is
NaN.
"""

from __future__ import annotations

import numpy as np
import torch
from torchvision.ops import box_iou

from region_sam3.eval.presence import mann_whitney_auc

#: mask IoU at which a query "segments" an object
GOOD_IOU = 0.5


def mask_iou(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """`[Q, G]` IoU of bool masks `pred [Q,h,w]` and `gt [G,h,w]` (0 where both are empty)."""
    p, g = pred.flatten(1).float(), gt.flatten(1).float()
    inter = p @ g.T
    return inter / (p.sum(1, keepdim=True) + g.sum(1) - inter).clamp(min=1)


def _cxcywh_to_xyxy(b: torch.Tensor) -> torch.Tensor:
    cx, cy, w, h = b.unbind(-1)
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], -1)


class QueryRanking:
    """Per-query ranking statistics over the present prompts of a split."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._good_prob: list[np.ndarray] = []
        self._other_prob: list[np.ndarray] = []
        self._good_box_iou: list[np.ndarray] = []
        self._rank: list[np.ndarray] = []
        self._good_count: list[np.ndarray] = []
        self._spread: list[float] = []
        self._pair_iou: list[float] = []
        self._prompt_auc: list[float] = []

    def process(self, probs: torch.Tensor, masks: torch.Tensor, boxes: torch.Tensor,
                gt_masks: torch.Tensor, gt_boxes: torch.Tensor) -> None:
        """One present prompt.

        Args:
            probs: `[Q]` sigmoid(query logit).  masks: `[Q,h,w]` bool.  boxes: `[Q,4]` cxcywh.
            gt_masks: `[G,h,w]` bool, the prompt's objects (G >= 1).  gt_boxes: `[G,4]` cxcywh.
        """
        probs = probs.detach().float().cpu()
        iou = mask_iou(masks.cpu(), gt_masks.cpu())  # [Q, G]
        good = iou.amax(1) >= GOOD_IOU
        self._good_prob.append(probs[good].numpy())
        self._other_prob.append(probs[~good].numpy())
        if good.any() and not good.all():
            self._prompt_auc.append(mann_whitney_auc(probs.numpy(), good.numpy())[0])
        biou = box_iou(_cxcywh_to_xyxy(boxes.float().cpu()), _cxcywh_to_xyxy(gt_boxes.float().cpu()))
        self._good_box_iou.append(biou.amax(1)[good].numpy())
        order = torch.argsort(probs, descending=True, stable=True)
        rank_of = torch.empty_like(order)
        rank_of[order] = torch.arange(1, len(order) + 1)
        self._rank.append(rank_of[iou.argmax(0)].numpy())
        self._good_count.append((iou >= GOOD_IOU).sum(0).numpy())
        self._spread.append(float(probs.max() - probs.min()))
        if len(masks) > 1:
            self_iou = mask_iou(masks.cpu(), masks.cpu())
            self._pair_iou.append(float(self_iou[~torch.eye(len(masks), dtype=torch.bool)].mean()))

    def evaluate(self) -> dict[str, float]:
        """`num_objects`, `num_prompts`; `oracle_recall` (objects some query segments),
        `query_auc` (good queries vs all other queries, by probability, pooled over
        prompts), `query_auc_within` (the same within each prompt, averaged over the prompts
        that have both), `oracle_top1` /
        `oracle_top3` / `oracle_median_rank` (rank of each object's best-IoU query in its
        prompt), `good_per_object`, `spread` (median max - min probability in a prompt),
        `pair_iou` (median mask IoU between a prompt's queries), medians of the good and other
        queries' probability and of the good queries' box IoU."""
        cat = lambda parts: np.concatenate(parts) if parts else np.zeros(0)  # noqa: E731
        good_prob, other_prob = cat(self._good_prob), cat(self._other_prob)
        rank, good_count = cat(self._rank), cat(self._good_count)
        med = lambda a: float(np.median(a)) if len(a) else float("nan")  # noqa: E731
        mean = lambda a: float(np.mean(a)) if len(a) else float("nan")  # noqa: E731
        auc, _, _ = mann_whitney_auc(np.concatenate([good_prob, other_prob]),
                                     np.r_[np.ones(len(good_prob), bool),
                                           np.zeros(len(other_prob), bool)])
        return {
            "num_objects": float(len(rank)),
            "num_prompts": float(len(self._spread)),
            "oracle_recall": mean(good_count > 0),
            "query_auc": auc,
            "query_auc_within": mean(np.array(self._prompt_auc)),
            "oracle_top1": mean(rank == 1),
            "oracle_top3": mean(rank <= 3),
            "oracle_median_rank": med(rank),
            "good_per_object": mean(good_count),
            "spread": med(np.array(self._spread)),
            "pair_iou": med(np.array(self._pair_iou)),
            "good_prob": med(good_prob),
            "other_prob": med(other_prob),
            "good_box_iou": med(cat(self._good_box_iou)),
        }
