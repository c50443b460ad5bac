"""Tests for mask-guided pooling (region_sam3.models.pooling)."""

from __future__ import annotations

import pytest
import torch

from region_sam3.models.pooling import (
    mask_pool,
    mask_pool_seq,
    naive_mask_pool,
    resize_masks,
    seq_to_spatial,
)


def _inputs(b: int = 2, q: int = 5, c: int = 7, h: int = 6, w: int = 5, dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    masks = torch.rand(b, q, h, w, generator=g, dtype=dtype)
    feats = torch.randn(b, c, h, w, generator=g, dtype=dtype)
    return masks, feats


def test_matches_naive_loop() -> None:
    masks, feats = _inputs()
    out = mask_pool(masks, feats)
    ref = naive_mask_pool(masks, feats)
    assert out.shape == (2, 5, 7)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)


def test_empty_mask_gives_zeros_and_full_mask_gives_mean() -> None:
    masks, feats = _inputs()
    masks[0, 1] = 0.0  # empty
    masks[1, 2] = 1.0  # full
    out = mask_pool(masks, feats)
    assert torch.isfinite(out).all()
    assert torch.equal(out[0, 1], torch.zeros(7))
    torch.testing.assert_close(out[1, 2], feats[1].mean((-2, -1)), rtol=1e-5, atol=1e-5)
    # Empty mask must also have finite, zero gradients w.r.t. features.
    feats = feats.clone().requires_grad_(True)
    mask_pool(masks, feats)[0, 1].sum().backward()
    assert feats.grad is not None and torch.isfinite(feats.grad).all()
    assert torch.count_nonzero(feats.grad) == 0


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 64])
def test_chunked_equals_batched(chunk: int) -> None:
    masks, feats = _inputs(q=7)
    torch.testing.assert_close(mask_pool(masks, feats, chunk_size=chunk), mask_pool(masks, feats))


def test_resizes_masks_to_feature_grid() -> None:
    masks, _ = _inputs(h=8, w=8)
    _, feats = _inputs(h=4, w=4)
    out = mask_pool(masks, feats)
    # area downsampling == 2x2 average pooling of the masks
    ref = naive_mask_pool(torch.nn.functional.avg_pool2d(masks, 2), feats)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    # upsampling path (bilinear) runs and has the right shape
    up = resize_masks(masks, (16, 12))
    assert up.shape == (2, 5, 16, 12)
    assert mask_pool(masks, torch.randn(2, 3, 16, 12)).shape == (2, 5, 3)


def test_seq_first_memory() -> None:
    masks, feats = _inputs(h=4, w=3)
    b, c = feats.shape[:2]
    mem = feats.flatten(2).permute(2, 0, 1)  # [HW,B,C]
    extra = torch.randn(5, b, c)  # non-spatial tokens appended after the grid are ignored
    mem = torch.cat([mem, extra], 0)
    assert torch.equal(seq_to_spatial(mem, (4, 3)), feats)
    torch.testing.assert_close(mask_pool_seq(masks, mem, (4, 3)), mask_pool(masks, feats))
    with pytest.raises(ValueError):
        seq_to_spatial(mem[:3], (4, 3))


def test_batch_broadcast() -> None:
    masks, feats = _inputs(b=3)
    out = mask_pool(masks, feats[:1])  # one image shared by three find-queries
    ref = naive_mask_pool(masks, feats[:1].expand(3, -1, -1, -1))
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)


def test_bf16_accumulates_in_fp32() -> None:
    masks, feats = _inputs(h=16, w=16)
    out = mask_pool(masks.bfloat16(), feats.bfloat16())
    assert out.dtype == torch.float32
    ref = naive_mask_pool(masks.bfloat16().float(), feats.bfloat16().float())
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out_ac = mask_pool(masks, feats)
    assert out_ac.dtype == torch.float32
    torch.testing.assert_close(out_ac, naive_mask_pool(masks, feats), rtol=1e-5, atol=1e-6)
    assert mask_pool(masks, feats, out_dtype=torch.bfloat16).dtype == torch.bfloat16


def test_gradcheck_float64() -> None:
    masks, feats = _inputs(b=1, q=3, c=2, h=3, w=3, dtype=torch.float64)
    masks = (masks * 0.9 + 0.05).requires_grad_(True)
    feats = feats.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda m, f: mask_pool(m, f), (masks, feats))
    # resize path (area) + chunking also differentiable
    big = torch.rand(1, 3, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    big.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda m, f: mask_pool(m, f, chunk_size=2), (big, feats))
