"""Object-level colour / shape probe (region_sam3.eval.object_probe)."""

from __future__ import annotations

import math

import torch

from region_sam3.eval.object_probe import ObjectProbeAccumulator, pooled_object_logits

NAMES = [f"{c} {s}" for s in ("circle", "star") for c in ("red", "blue")]  # ids 1..4


def _scene():
    """Two objects on a 16² image: a large red circle (id 1) and a small blue star (id 4)."""
    masks = torch.zeros(2, 16, 16, dtype=torch.bool)
    masks[0, :, :10] = True   # 160 px
    masks[1, 12:, 12:] = True  # 16 px
    return masks, torch.tensor([1, 4])


def _logits_voting(masks: torch.Tensor, votes: list[int]) -> torch.Tensor:
    """[5,8,8] logits whose arg-max inside object k is category votes[k]."""
    logits = torch.zeros(5, 8, 8)
    logits[0] = 1.0  # background everywhere: excluded from the object's arg-max
    small = torch.nn.functional.interpolate(masks[:, None].float(), size=8, mode="area")[:, 0]
    for k, vote in enumerate(votes):
        logits[vote] += 5 * small[k]
    return logits


def test_pooled_logits_are_mask_averages():
    masks, _ = _scene()
    logits = torch.randn(5, 16, 16)
    pooled = pooled_object_logits(logits, masks)
    expected = logits[:, masks[0]].mean(1)
    assert torch.allclose(pooled[0], expected, atol=1e-5)


def test_colour_right_shape_wrong_is_counted_separately():
    masks, ids = _scene()
    probe = ObjectProbeAccumulator.from_category_names(NAMES, large_pixels=100)
    # object 0 (red circle) predicted "red star" (3): colour right, shape wrong;
    # object 1 (blue star) predicted "blue star" (4): all right.
    probe.update(_logits_voting(masks, [3, 4]), masks, ids)
    out = probe.compute()
    assert out["num_objects"] == 2
    assert out["colour_acc"] == 1.0
    assert out["shape_acc"] == 0.5
    assert out["category_acc"] == 0.5
    assert out["large/num_objects"] == 1
    assert out["large/shape_acc"] == 0.0 and out["large/colour_acc"] == 1.0


def test_empty_group_is_nan_with_zero_count():
    masks, ids = _scene()
    probe = ObjectProbeAccumulator.from_category_names(NAMES, large_pixels=10_000)
    probe.update(_logits_voting(masks, [1, 4]), masks, ids)
    out = probe.compute()
    assert out["shape_acc"] == 1.0
    assert out["large/num_objects"] == 0 and math.isnan(out["large/shape_acc"])
    probe.reset()
    assert math.isnan(probe.compute()["shape_acc"])
