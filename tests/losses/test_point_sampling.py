"""`PointSampledMasks._sampled_loss`: SAM3's sampling at official sizes, dense at small ones."""

from __future__ import annotations

import pytest
import torch
from sam3.train.loss import mask_sampling
from sam3.train.loss.loss_fns import Masks

import region_sam3.losses.sam3_criterion as criterion_module
from region_sam3.losses.sam3_criterion import PointSampledMasks, _focal_loss_backend

WEIGHTS = {"loss_mask": 1.0, "loss_dice": 1.0}


def _masks(size: int, target_size: int, n: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    src = torch.randn(n, size, size, generator=g, requires_grad=True)
    target = (torch.rand(n, target_size, target_size, generator=g) > 0.6).float()
    return src, target


def _loss(loss_fn, src, target, seed: int = 1):
    torch.manual_seed(seed)
    with _focal_loss_backend(use_triton=False):
        return loss_fn._sampled_loss(src, target, num_boxes=3)


def test_large_masks_keep_sam3_sampling_bit_for_bit():
    """K·oversample <= H·W (the official 112²·3 <= 288² regime): same draws, same losses."""
    src, target = _masks(32, 48)
    ours = _loss(PointSampledMasks(WEIGHTS, num_sample_points=64, oversample_ratio=3.0), src,
                 target)
    upstream = _loss(Masks(WEIGHTS, num_sample_points=64, oversample_ratio=3.0,
                           importance_sample_ratio=0.75), src, target)
    for key in ("loss_mask", "loss_dice"):
        assert torch.equal(ours[key], upstream[key]), key


def test_official_size_is_in_the_sampling_regime():
    k, ratio, pixels = 112 * 112, 3.0, 288 * 288
    assert k * ratio <= pixels  # so the first test's regime is the one official training uses


def test_masks_no_larger_than_k_use_every_pixel_once(monkeypatch):
    """K >= H·W: dense loss, equal to point-sampling every pixel centre, no random draws."""
    src, target = _masks(8, 28)
    monkeypatch.setattr(criterion_module, "get_uncertain_point_coords_with_randomness",
                        lambda *a, **k: pytest.fail("dense branch must not sample points"))
    dense = _loss(PointSampledMasks(WEIGHTS, num_sample_points=64), src, target)
    centres = (torch.arange(8) + 0.5) / 8
    yy, xx = torch.meshgrid(centres, centres, indexing="ij")
    coords = torch.stack([xx, yy], -1).reshape(1, 64, 2).expand(3, -1, -1)
    logits = mask_sampling.point_sample(src[:, None], coords, align_corners=False).squeeze(1)
    labels = mask_sampling.point_sample(target[:, None], coords, align_corners=False).squeeze(1)
    expected = criterion_module.loss_fns.dice_loss(logits, labels, 3)
    torch.testing.assert_close(dense["loss_dice"], expected)
    expected = criterion_module._UPSTREAM_FOCAL(logits, labels, 3, triton=False)
    torch.testing.assert_close(dense["loss_mask"], expected)
    dense["loss_mask"].backward()
    assert src.grad is not None and (src.grad != 0).float().mean() > 0.9  # every pixel trained


def test_candidate_pool_capped_at_mask_pixels(monkeypatch):
    """K < H·W < K·oversample (64² masks, K = 56²): candidates = H·W, not K·oversample."""
    seen = {}
    upstream = criterion_module.get_uncertain_point_coords_with_randomness

    def spy(logits, fn, num_points, ratio, importance):
        seen["pool"] = int(num_points * ratio)
        return upstream(logits, fn, num_points, ratio, importance)

    monkeypatch.setattr(criterion_module, "get_uncertain_point_coords_with_randomness", spy)
    src, target = _masks(64, 224, n=2)
    losses = _loss(PointSampledMasks(WEIGHTS, num_sample_points=56 * 56), src, target)
    assert seen["pool"] == 64 * 64  # SAM3 would draw 9,408
    assert all(torch.isfinite(v) for v in losses.values())
