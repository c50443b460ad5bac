"""Seeded tiny RegionHead cases shared by the golden generator and the golden test.

Each case builds a RegionHead with every parameter re-drawn from a seeded normal (so the
zero-initialised delta / write-back layers are active) and runs one forward on seeded inputs.
"""

from __future__ import annotations

import torch
from torch import Tensor

from region_sam3.models.region_head import RegionHead

C, B, Q, H, HM = 32, 2, 6, 16, 8

CASES: dict[str, dict] = {
    "default": dict(),
    "dac_writeback_gate": dict(use_writeback=True, use_text_gating=True, num_o2o=3),
    "fresh_unshared_nodetach": dict(
        residual=False, share_weights=False, detach_between_iters=False, num_iters=3
    ),
    "sharpened_lowres": dict(pool_mode="sharpened", pool_resolution=8, pool_memory=False),
    "thresholded_chunk": dict(pool_mode="thresholded", pool_chunk_size=4),
    "box_normalised": dict(pool_mode="box_normalised", use_self_attn=False),
    "roi_align": dict(pool_mode="roi_align", use_cross_attn=False, use_ffn=False),
    "no_pool": dict(pool_pixel=False, pool_memory=False, embed_dim=16),
}


def run_case(name: str) -> dict[str, Tensor]:
    """Flat dict of the case's outputs (masks_t, region_tokens, region_embed, region_gate,
    and the gradient of sum(last mask) w.r.t. the queries)."""
    kw = dict(CASES[name])
    num_o2o = kw.pop("num_o2o", None)
    kw.setdefault("num_iters", 2)
    torch.manual_seed(123)
    head = RegionHead(d_model=C, num_heads=4, dim_feedforward=64, zero_init_delta=False, **kw)
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in head.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    head.eval()
    logits = torch.randn(B, Q, H, H, generator=g) * 2
    queries = torch.randn(B, Q, C, generator=g).requires_grad_(True)
    pix = torch.randn(B, C, H, H, generator=g)
    memory = torch.randn(B, C, HM, HM, generator=g)
    text = torch.randn(B, C, generator=g)
    out = head(logits, queries, pix, memory, text=text, num_o2o=num_o2o)
    out["masks"][-1].sum().backward()
    flat = {f"masks_{t}": m.detach() for t, m in enumerate(out["masks"])}
    flat["region_tokens"] = out["region_tokens"].detach()
    flat["region_embed"] = out["region_embed"].detach()
    if "region_gate" in out:
        flat["region_gate"] = out["region_gate"].detach()
    flat["grad_queries"] = queries.grad.detach()
    return flat
