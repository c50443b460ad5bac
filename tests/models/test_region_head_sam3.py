"""Region head inside the tiny SAM3 model (lead's factory), CPU."""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import build_tiny_sam3, last_stage_output, make_find_batch

from region_sam3.models.region_head import RegionHead
from region_sam3.models.region_seg_head import (
    RegionAwareSegmentationHead,
    build_region_seg_head,
    collect_iter_masks,
)

UPSTREAM_KEYS = ("pred_masks", "pred_boxes", "pred_logits", "presence_logit_dec")


def _with_head(plain, **kw) -> torch.nn.Module:
    model = copy.deepcopy(plain)
    d = model.segmentation_head.d_model
    torch.manual_seed(7)
    rh = RegionHead(d_model=d, num_heads=4, dim_feedforward=2 * d, **kw)
    model.segmentation_head = build_region_seg_head(
        model.segmentation_head, rh, num_o2o_queries=model.transformer.decoder.num_queries
    )
    return model


@pytest.fixture(scope="module")
def plain():
    return build_tiny_sam3(seed=0)


@pytest.mark.parametrize("train", [False, True])
def test_t0_reproduces_sam3_exactly(plain, train: bool) -> None:
    region = _with_head(plain, num_iters=0, embed_dim=16)
    batch = make_find_batch()
    outs = []
    for m in (plain, region):
        m.train(train)
        torch.manual_seed(0)
        with torch.no_grad():
            outs.append(last_stage_output(m(batch)))
    ref, out = outs
    keys = UPSTREAM_KEYS + (("pred_masks_o2m", "pred_logits_o2m") if train else ())
    for k in keys:
        assert torch.equal(out[k], ref[k]), k
    assert torch.equal(out["pred_masks_iter0"], ref["pred_masks"])
    q = plain.transformer.decoder.num_queries
    assert out["region_embed"].shape == (2, q, 16)
    if train:
        # DAC split applied to the new per-query keys as well
        assert out["region_tokens"].shape == out["region_tokens_o2m"].shape == (2, q, 64)
        assert [None if i is None else i.tolist() for i in out["indices"]] == [
            None if i is None else i.tolist() for i in ref["indices"]
        ]


def test_t2_forward_backward(plain) -> None:
    model = _with_head(plain, num_iters=2, zero_init_delta=False, use_writeback=True, embed_dim=16)
    model.train()
    assert isinstance(model.segmentation_head, RegionAwareSegmentationHead)
    out = last_stage_output(model(make_find_batch()))
    q = model.transformer.decoder.num_queries
    iters = collect_iter_masks(out, 2)
    iters_o2m = collect_iter_masks(out, 2, suffix="_o2m")
    assert [m.shape for m in iters] == [(2, q, 64, 64)] * 3
    assert [m.shape for m in iters_o2m] == [(2, q, 64, 64)] * 3
    assert torch.equal(out["pred_masks"], iters[-1])
    assert out["region_tokens"].shape == (2, q, 64)
    assert out["region_embed"].shape == (2, q, 16)
    assert all(torch.isfinite(m).all() for m in iters + iters_o2m)
    loss = sum(m.sigmoid().mean() for m in iters + iters_o2m) + out["region_embed"].square().mean()
    loss.backward()
    rh_grads = [p.grad for p in model.segmentation_head.region_head.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in rh_grads)
    assert sum(int(g.abs().sum() > 0) for g in rh_grads) >= 0.9 * len(rh_grads)


def test_factory_hook_builds_region_head() -> None:
    model = build_tiny_sam3(
        [
            "+region_head._target_=region_sam3.models.region_head.RegionHead",
            "+region_head.d_model=64",
            "+region_head.num_iters=1",
            "+region_head.num_heads=4",
        ]
    )
    head = model.segmentation_head
    assert isinstance(head, RegionAwareSegmentationHead)
    assert head.num_iters == 1
    new = [k for k in model.state_dict() if ".region_head." in k]
    assert new and all(k.startswith("segmentation_head.region_head.") for k in new)
