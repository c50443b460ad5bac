"""`Sam3Criterion`: SAM3's losses on a tiny model's output, including the semantic-head term."""

import pytest
import torch
from helpers import build_tiny_sam3, make_find_batch

from region_sam3.losses.sam3_criterion import Sam3Criterion


def _semantic_targets(batch):
    """Fill `semantic_segments` as `to_sam3_batch` does: per query, the union of its masks."""
    target = batch.find_targets[0]
    per_query = torch.split(target.segments, target.num_boxes.tolist())
    target.semantic_segments = torch.stack([m.any(dim=0) for m in per_query])
    return batch


@pytest.fixture(scope="module")
def model_and_batch():
    model = build_tiny_sam3().train()
    return model, _semantic_targets(make_find_batch())


def _losses(model, batch, **weights):
    torch.manual_seed(0)
    criterion = Sam3Criterion(num_sample_points=64, **weights)
    out = model(batch)
    targets = [model.back_convert(t) for t in batch.find_targets]
    return criterion(out, targets)


def _semantic_head_grad(model, losses) -> float:
    model.zero_grad()
    losses["total"].backward()
    grad = model.segmentation_head.semantic_seg_head.weight.grad
    return 0.0 if grad is None else float(grad.abs().sum())


def test_semantic_term_off_by_default(model_and_batch):
    model, batch = model_and_batch
    losses = _losses(model, batch)
    assert "loss_semantic_seg" not in losses
    assert _semantic_head_grad(model, losses) == 0.0


def test_semantic_term_adds_weighted_bce_and_dice(model_and_batch):
    model, batch = model_and_batch
    plain = _losses(model, batch)
    with_semantic = _losses(model, batch, semantic_seg=20.0, semantic_dice=10.0)
    bce, dice = with_semantic["loss_semantic_seg"], with_semantic["loss_semantic_dice"]
    assert torch.isfinite(bce) and bce > 0 and 0 < dice <= 1
    # The semantic term enters the total once for the single find stage.
    expected = plain["total"] + 20.0 * bce + 10.0 * dice
    torch.testing.assert_close(with_semantic["total"], expected, rtol=1e-4, atol=1e-4)
    assert _semantic_head_grad(model, with_semantic) > 0.0
