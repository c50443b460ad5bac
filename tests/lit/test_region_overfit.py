"""The closed loop must fix what a per-query mask head cannot: two touching objects merged in M^0.

Constructed case (issue 13, item 4): two queries with *identical* decoder states both predict
the union of two touching objects (M^0 > 0 on both, only slightly tilted towards their own
object). A mask-head fine-tune (``M = M^0 + MLP(q) . F``, the per-query kernel SAM3 learns) gives
both queries the same update, so it provably cannot separate them where their M^0 are equal
(the inner halves of both objects): its best minimum IoU is 2/3. The region head pools *with the current
mask* (mask -> token), so the two tokens differ and the refined masks can split the union.

The test fails for a wrong head (checked by breaking the code, see the issue 13 note): with the
refinement disabled (delta = 0) the head stays at IoU 0.5; with the mask cut out of the token
(uniform pooling weights *and* unmasked cross-attention) the two tokens stay identical and the
head ends at 0.49 like the baseline. (Uniform pooling alone still passes: after the first
update the masked cross-attention sets differ per query and carry the mask into the token.) The
previous version of this file compared a trained T=2 with an untrained T=0 on its training
batch, which any trainable parameters pass.
"""

from __future__ import annotations

import torch
from sam3.model.model_misc import MLP

from region_sam3.models.region_head import RegionHead

GRID, MEM, C = 16, 8, 32
STEPS = 150


def _merged_pair() -> dict[str, torch.Tensor]:
    left = torch.zeros(GRID, GRID, dtype=torch.bool)
    right = torch.zeros_like(left)
    left[4:12, 2:8] = True
    right[4:12, 8:14] = True  # touching along one column
    g = torch.Generator().manual_seed(0)
    feats = 0.05 * torch.randn(1, C, GRID, GRID, generator=g)
    feats[0, 0] += left.float()
    feats[0, 1] += right.float()
    feats[0, 2] += (~(left | right)).float()
    # Both queries: the union at logit 0.5; each is confident (logit 4) only on the outer half of
    # its own object. On the inner halves the two queries' M^0 are equal, so an update shared
    # by both queries cannot make one positive and the other negative there.
    m0 = torch.full((1, 2, GRID, GRID), -4.0)
    m0[0, :, left | right] = 0.5
    m0[0, 0, 4:12, 2:5] = 4.0
    m0[0, 1, 4:12, 11:14] = 4.0
    query = torch.randn(1, 1, C, generator=g).expand(1, 2, C).contiguous()  # identical states
    return {
        "m0": m0,
        "queries": query,
        "feats": feats,
        "memory": torch.nn.functional.avg_pool2d(feats, GRID // MEM),
        "target": torch.stack([left, right]).float()[None],
    }


def _min_iou(logits: torch.Tensor, target: torch.Tensor) -> float:
    pred = logits > 0
    tgt = target > 0.5
    inter = (pred & tgt).flatten(2).sum(-1).float()
    union = (pred | tgt).flatten(2).sum(-1).float()
    return float((inter / union).min())


def _train(forward, params, target: torch.Tensor) -> torch.Tensor:
    opt = torch.optim.Adam(params, lr=3e-3)
    for _ in range(STEPS):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(forward(), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return forward()


def test_closed_loop_separates_merged_objects_a_mask_head_cannot():
    torch.manual_seed(0)
    case = _merged_pair()
    assert _min_iou(case["m0"], case["target"]) == 0.5  # M^0: both queries = the union

    head = RegionHead(d_model=C, num_iters=2, num_heads=4, dim_feedforward=64)

    def refine():
        out = head(case["m0"], case["queries"], case["feats"], case["memory"])
        return out["masks"][-1]

    head_iou = _min_iou(_train(refine, list(head.parameters()), case["target"]), case["target"])

    # Mask-head fine-tune with a larger budget than the head's: residual per-query kernel.
    kernel = MLP(C, 4 * C, C, 3)
    assert sum(p.numel() for p in kernel.parameters()) > sum(p.numel() for p in head.parameters()) / 4

    def mask_head():
        return case["m0"] + torch.einsum("bqc,bchw->bqhw", kernel(case["queries"]), case["feats"])

    base_iou = _min_iou(_train(mask_head, list(kernel.parameters()), case["target"]),
                        case["target"])
    assert base_iou < 0.7, base_iou  # identical updates for both queries: at most 2/3
    assert head_iou > 0.9, (head_iou, base_iou)
