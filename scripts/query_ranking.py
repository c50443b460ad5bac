"""Does the per-query score single out the query that segments the object? (issue 18)

    python scripts/query_ranking.py --ckpt <run>/checkpoints/epoch_009.ckpt [--split val]
    python scripts/query_ranking.py --base tiny_base

Over every present prompt of the split (all categories asked, as in the evaluation), with the
masks at the model's mask resolution thresholded at logit 0 and ground truth area-downsampled to
it, prints `region_sam3.eval.query_ranking.QueryRanking`'s statistics:
- `oracle recall`: share of objects that some query segments at mask IoU >= 0.5 (what a perfect
  per-query score could reach);
- `query AUC`: sigmoid(query logit) ranks queries that segment an object above the other
  queries (Mann-Whitney; 0.5 = chance), pooled over prompts and within each prompt;
- `oracle rank`: per object, the rank (1 = top) of its best-IoU query among the prompt's queries;
- `good queries / object`: queries at IoU >= 0.5 per object (duplicates when > 1);
- `within-prompt spread` (max - min query probability) and the mask IoU between a prompt's
  queries: 0 and 1 when the queries have collapsed onto one state;
- the box IoU of the good queries, which SAM3's IA-BCE soft target (prob^0.25 * boxIoU^0.75)
  ties the matched query's classification target to.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from presence_auc import model_and_split, model_source_parser  # noqa: E402

from region_sam3.data.sam3_adapter import to_sam3_batch  # noqa: E402
from region_sam3.eval.query_ranking import QueryRanking  # noqa: E402
from region_sam3.lit.evaluation import final_output  # noqa: E402


@torch.no_grad()
def main() -> None:
    args = model_source_parser(__doc__.splitlines()[0], split="val").parse_args()
    module, datamodule = model_and_split(args)
    stats = QueryRanking()
    for batch in datamodule.test_dataloader():
        out = final_output(module.net(to_sam3_batch(batch, module.device)))
        probs = torch.sigmoid(out["pred_logits"].float()[..., 0])  # [B, Q]
        masks = out["pred_masks"] > 0  # [B, Q, h, w]
        for b in torch.nonzero(~batch.is_negative).flatten().tolist():
            rows = torch.nonzero(batch.target_query_index == b).flatten()
            gt = F.interpolate(batch.masks[rows][:, None].float(), size=masks.shape[-2:],
                               mode="area")[:, 0] >= 0.5
            stats.process(probs[b], masks[b], out["pred_boxes"][b], gt, batch.boxes_cxcywh[rows])
    s = stats.evaluate()
    print(f"{args.ckpt or args.base} on {args.split}: {s['num_objects']:.0f} objects of "
          f"{s['num_prompts']:.0f} present prompts")
    print(f"  oracle recall (some query IoU >= 0.5): {s['oracle_recall']:.3f}")
    print(f"  query AUC (good vs other queries): pooled {s['query_auc']:.4f}, within a prompt "
          f"{s['query_auc_within']:.4f}")
    print(f"  oracle rank: median {s['oracle_median_rank']:.0f}, top-1 {s['oracle_top1']:.3f}, "
          f"top-3 {s['oracle_top3']:.3f}")
    print(f"  good queries / object: {s['good_per_object']:.2f}")
    print(f"  within-prompt spread of query prob (median): {s['spread']:.4f}")
    print(f"  mask IoU between a prompt's queries (median): {s['pair_iou']:.3f}")
    print(f"  query prob (median): good {s['good_prob']:.3f}, other {s['other_prob']:.3f}")
    print(f"  box IoU of good queries (median): {s['good_box_iou']:.3f}")


if __name__ == "__main__":
    main()
