"""Does the per-query score single out the query that segments the object? (issue 18)

    python scripts/query_ranking.py --ckpt <run>/checkpoints/epoch_009.ckpt [--split val]
    python scripts/query_ranking.py --base tiny_base

Presence separates present from absent prompts (`scripts/presence_auc.py`); AP also needs the
*queries* of a present prompt ranked: the one whose mask covers an object above its duplicates
and its empty queries. Over every present prompt of the split (all categories asked, as in the
evaluation), with masks at the model's mask resolution thresholded at logit 0:
- `oracle recall`: share of objects that some query segments at mask IoU >= 0.5 (what a perfect
  per-query score could reach);
- `query AUC`: sigmoid(query logit) ranks queries that segment an object (IoU >= 0.5 with one of
  the prompt's objects) above the prompt's other queries (Mann-Whitney; 0.5 = chance);
- `oracle rank`: per object, the rank (1 = top) of its best-IoU query among the prompt's queries;
- `good queries / object`: queries at IoU >= 0.5 per object (duplicates when > 1);
- `within-prompt spread`: max - min of sigmoid(query logit) over a prompt's queries (0 when the
  queries have collapsed onto one state), and the mask IoU between a prompt's queries;
- the query probability of good queries vs the rest, and the box IoU of the good ones, which
  IA-BCE's soft target (prob^0.25 * boxIoU^0.75) caps the probability at.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.ops import box_iou

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from presence_auc import _module_and_data  # noqa: E402

from region_sam3.data.sam3_adapter import to_sam3_batch  # noqa: E402
from region_sam3.eval.presence import mann_whitney_auc  # noqa: E402
from region_sam3.lit.evaluation import final_output  # noqa: E402


def mask_iou(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """`[Q, G]` IoU of `pred [Q,h,w]` and `gt [G,h,w]` (bool)."""
    p, g = pred.flatten(1).float(), gt.flatten(1).float()
    inter = p @ g.T
    return inter / (p.sum(1, keepdim=True) + g.sum(1) - inter).clamp(min=1)


def cxcywh_to_xyxy(b: torch.Tensor) -> torch.Tensor:
    cx, cy, w, h = b.unbind(-1)
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], -1)


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--ckpt", help="a train.py checkpoint")
    source.add_argument("--base", help="conf/model/sam3/<name> (its own checkpoint)")
    parser.add_argument("--split", default="val")
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()
    torch.manual_seed(0)
    module, datamodule = _module_and_data(args)
    module.eval()
    datamodule.setup("test")
    good_prob, other_prob, good_box_iou, ranks, goods, covered = [], [], [], [], [], []
    spread, pair_iou = [], []
    for batch in datamodule.test_dataloader():
        out = final_output(module.net(to_sam3_batch(batch, module.device)))
        probs = torch.sigmoid(out["pred_logits"].float()[..., 0])  # [B, Q]
        masks = out["pred_masks"]  # [B, Q, h, w] logits
        boxes = out["pred_boxes"].float()  # [B, Q, 4] cxcywh
        for b in torch.nonzero(~batch.is_negative).flatten().tolist():
            rows = torch.nonzero(batch.target_query_index == b).flatten()
            gt = F.interpolate(batch.masks[rows][:, None].float(), size=masks.shape[-2:],
                               mode="area")[:, 0] >= 0.5
            iou = mask_iou(masks[b] > 0, gt)  # [Q, G]
            good = iou.amax(1) >= 0.5
            spread.append(float(probs[b].max() - probs[b].min()))
            self_iou = mask_iou(masks[b] > 0, masks[b] > 0)
            off_diagonal = ~torch.eye(len(self_iou), dtype=torch.bool)
            pair_iou.append(float(self_iou[off_diagonal].mean()))
            good_prob.append(probs[b][good].numpy())
            other_prob.append(probs[b][~good].numpy())
            biou = box_iou(cxcywh_to_xyxy(boxes[b]), cxcywh_to_xyxy(batch.boxes_cxcywh[rows]))
            good_box_iou.append(biou.amax(1)[good].numpy())
            order = torch.argsort(probs[b], descending=True)
            rank_of = torch.empty_like(order)
            rank_of[order] = torch.arange(1, len(order) + 1)
            ranks.append(rank_of[iou.argmax(0)].numpy())
            goods.append((iou >= 0.5).sum(0).numpy())
            covered.append((iou.amax(0) >= 0.5).numpy())
    good_prob, other_prob = np.concatenate(good_prob), np.concatenate(other_prob)
    ranks, goods, covered = np.concatenate(ranks), np.concatenate(goods), np.concatenate(covered)
    good_box_iou = np.concatenate(good_box_iou)
    auc, n_good, n_other = mann_whitney_auc(np.concatenate([good_prob, other_prob]),
                                            np.r_[np.ones(len(good_prob), bool),
                                                  np.zeros(len(other_prob), bool)])
    q = np.quantile
    print(f"{args.ckpt or args.base} on {args.split}: {len(ranks)} objects of present prompts")
    print(f"  oracle recall (some query IoU >= 0.5): {covered.mean():.3f}")
    print(f"  query AUC (good vs other queries):     {auc:.4f}  ({n_good} good, {n_other} other)")
    print(f"  oracle rank: median {np.median(ranks):.0f}, top-1 {np.mean(ranks == 1):.3f}, "
          f"top-3 {np.mean(ranks <= 3):.3f}")
    print(f"  good queries / object: mean {goods.mean():.2f}, objects with > 1: "
          f"{np.mean(goods > 1):.3f}")
    print(f"  within-prompt spread of query prob: median {np.median(spread):.4f}, "
          f"max {max(spread):.4f} ({len(spread)} present prompts)")
    print(f"  mask IoU between a prompt's queries: median {np.median(pair_iou):.3f}")
    print(f"  query prob, good:  median {np.median(good_prob):.3f} "
          f"(p10 {q(good_prob, .1):.3f}, p90 {q(good_prob, .9):.3f}, max {good_prob.max():.3f})")
    print(f"  query prob, other: median {np.median(other_prob):.3f} "
          f"(p10 {q(other_prob, .1):.3f}, p90 {q(other_prob, .9):.3f})")
    print(f"  box IoU of good queries: median {np.median(good_box_iou):.3f} "
          f"(p10 {q(good_box_iou, .1):.3f}, p90 {q(good_box_iou, .9):.3f})")


if __name__ == "__main__":
    main()
