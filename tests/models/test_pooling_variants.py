"""Pooling variants for small regions (region_sam3.models.pooling.region_pool)."""

from __future__ import annotations

import pytest
import torch

from region_sam3.models.pooling import (
    POOL_MODES,
    mask_boxes,
    mask_pool,
    pooling_weights,
    region_pool,
)
from region_sam3.models.region_head import RegionHead

GRID = 64
NEW_MODES = [m for m in POOL_MODES if m != "soft"]


def _small_region_logits() -> tuple[torch.Tensor, torch.Tensor]:
    """A 6x6 object (0.88% of a 64^2 grid) with SAM-like logits: +4 inside, a background that
    rises from -6 far away to -2 next to the object (the sigmoid tail soft pooling sums).

    Returns (logits [1,1,64,64], inside [1,1,64,64] bool)."""
    ys, xs = torch.meshgrid(torch.arange(GRID), torch.arange(GRID), indexing="ij")
    y0, x0, size = 20, 37, 6
    inside = (ys >= y0) & (ys < y0 + size) & (xs >= x0) & (xs < x0 + size)
    dy = (y0 - ys).clamp_min(0) + (ys - (y0 + size - 1)).clamp_min(0)
    dx = (x0 - xs).clamp_min(0) + (xs - (x0 + size - 1)).clamp_min(0)
    dist = torch.maximum(dx, dy).float()
    logits = torch.where(inside, torch.tensor(4.0), -2.0 - (dist - 1).clamp_min(0) * 0.5)
    logits = logits.clamp_min(-6.0)
    return logits[None, None], inside[None, None]


def _inside_fraction(mode: str, feat_grid: int = GRID) -> float:
    """Pooling the indicator feature 1[pixel in region] gives the fraction of the pooling
    weight that comes from inside the region (for every variant, RoIAlign included)."""
    logits, inside = _small_region_logits()
    feats = inside.float()
    if feat_grid != GRID:
        feats = torch.nn.functional.interpolate(feats, size=(feat_grid, feat_grid), mode="area")
    return float(region_pool(logits, feats, mode=mode)[0, 0, 0])


def test_constructed_region_is_small_and_soft_pooling_leaks():
    logits, inside = _small_region_logits()
    assert inside.float().mean() < 0.01
    soft = _inside_fraction("soft")
    # measured 0.62, as the ~62% median the issue measured on the base's `small` split: over a
    # third of the weight comes from the background tail
    assert soft < 0.7, soft


@pytest.mark.parametrize("mode", NEW_MODES)
def test_new_variants_pool_from_inside_the_small_region(mode: str):
    frac = _inside_fraction(mode)
    assert frac >= 0.9, (mode, frac, _inside_fraction("soft"))


@pytest.mark.parametrize("mode", POOL_MODES)
def test_shapes_broadcast_resize_and_grads(mode: str):
    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(2, 5, 16, 16, generator=g) * 3).requires_grad_(True)
    feats = torch.randn(2, 7, 8, 8, generator=g, requires_grad=True)
    out = region_pool(logits, feats, mode=mode)
    assert out.shape == (2, 5, 7) and out.dtype == torch.float32 and torch.isfinite(out).all()
    # one image shared by several find-queries (B=1 features)
    shared = region_pool(logits, feats[:1], mode=mode)
    torch.testing.assert_close(shared, region_pool(logits, feats[:1].expand(2, -1, -1, -1),
                                                   mode=mode))
    out.sum().backward()
    assert feats.grad is not None and feats.grad.abs().sum() > 0
    if mode in ("soft", "sharpened", "box_normalised"):  # weights differentiable in M
        assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_thresholded_empty_mask_falls_back_to_soft_and_box_to_whole_grid():
    logits = torch.full((1, 2, 8, 8), -3.0)
    logits[0, 1, 2:4, 5:7] = 3.0
    w = pooling_weights(logits, "thresholded")
    torch.testing.assert_close(w[0, 0], logits[0, 0].sigmoid())  # empty -> soft, never zero
    assert torch.equal(w[0, 1], (logits[0, 1] > 0).float())
    boxes, nonempty = mask_boxes(logits.sigmoid())
    assert nonempty.tolist() == [[False, True]]
    assert boxes[0, 0].tolist() == [0, 0, 8, 8] and boxes[0, 1].tolist() == [5, 2, 7, 4]
    box_w = pooling_weights(logits, "box_normalised")
    assert torch.equal(box_w[0, 1] > 0, logits[0, 1] > 0)  # box == mask here
    torch.testing.assert_close(box_w[0, 0], logits[0, 0].sigmoid())


def test_soft_mode_is_the_existing_pooling():
    g = torch.Generator().manual_seed(1)
    logits, feats = torch.randn(2, 3, 8, 8, generator=g), torch.randn(2, 4, 4, 4, generator=g)
    assert torch.equal(region_pool(logits, feats, mode="soft"), mask_pool(logits.sigmoid(), feats))
    with pytest.raises(ValueError, match="pool_mode"):
        region_pool(logits, feats, mode="median")


@pytest.mark.parametrize("mode", POOL_MODES)
def test_region_head_runs_every_pool_mode(mode: str):
    torch.manual_seed(0)
    head = RegionHead(d_model=16, num_iters=2, num_heads=2, dim_feedforward=32, pool_mode=mode,
                      zero_init_delta=False)
    m0 = torch.randn(2, 4, 16, 16, requires_grad=True)
    out = head(m0, torch.randn(2, 4, 16), torch.randn(2, 16, 16, 16), torch.randn(2, 16, 4, 4))
    assert len(out["masks"]) == 3 and out["masks"][-1].shape == m0.shape
    out["masks"][-1].sum().backward()
    assert all(p.grad is not None for p in head.blocks[0].pool_mlp.parameters())
    with pytest.raises(ValueError, match="pool_mode"):
        RegionHead(d_model=16, num_heads=2, pool_mode="nope")
