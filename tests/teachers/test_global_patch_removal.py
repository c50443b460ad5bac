"""TextRegion global patch removal on a hand-computed example and via the teacher."""

import math

import torch
from teacher_helpers import make_teacher

from region_sam3.teachers import global_patch_removal_keep


def _example() -> tuple[torch.Tensor, torch.Tensor]:
    e1, e2 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    g = (e1 + e2) / math.sqrt(2)  # a "global" patch similar to both regions
    feats = torch.stack([e1, e1, e2, e2, g]) * torch.tensor([[1.0], [2.0], [3.0], [1.0], [5.0]])
    masks = torch.tensor([[1, 1, 0, 0, 1], [0, 0, 1, 1, 0]], dtype=torch.float32)  # A, B
    return feats, masks


def test_hand_computed_scores() -> None:
    # p4: mean sim to A = (c + c + 1) / 3 = 0.8047 (inside), to B = c = 0.7071 (outside),
    # difference 0.0976; p0/p1: 0.9024 - 0; p2/p3: 1 - 0.2357. c = cos 45deg.
    feats, masks = _example()
    assert global_patch_removal_keep(feats, masks, 0.07).tolist() == [True] * 5
    assert global_patch_removal_keep(feats, masks, 0.1).tolist() == [True, True, True, True, False]
    assert global_patch_removal_keep(feats, masks, 0.77).tolist() == [True, True, False, False, False]
    assert global_patch_removal_keep(feats, masks, 0.95).tolist() == [False] * 5


def test_soft_and_empty_masks_use_binary_membership() -> None:
    feats, masks = _example()
    soft = torch.cat([masks * 0.3, torch.zeros(1, 5)])  # weights >0 count fully; empty row ignored
    assert global_patch_removal_keep(feats, soft, 0.1).tolist() == [True, True, True, True, False]
    assert global_patch_removal_keep(feats, torch.zeros(2, 5), 0.1).all()


def _loop_reference(feats: torch.Tensor, masks: torch.Tensor, thr: float) -> list[bool]:
    f = feats / feats.norm(dim=-1, keepdim=True)
    b = [m > 0 for m in masks if (m > 0).any()]
    keep = []
    for p in range(f.shape[0]):
        avg = [float(sum(f[p] @ f[q] for q in range(f.shape[0]) if m[q]) / m.sum()) for m in b]
        ins = [a for a, m in zip(avg, b) if m[p]]
        out = [a for a, m in zip(avg, b) if not m[p]]
        diff = sum(ins) / (len(ins) + 1e-9) - sum(out) / (len(out) + 1e-9)
        keep.append(diff >= thr)
    return keep


def test_matches_loop_reference_on_random_input() -> None:
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(12, 6, generator=g)
    masks = (torch.rand(4, 12, generator=g) > 0.6).float()
    for thr in (-0.2, 0.0, 0.07, 0.3):
        assert global_patch_removal_keep(feats, masks, thr).tolist() == _loop_reference(feats, masks, thr)


def test_teacher_applies_removal(images: torch.Tensor) -> None:
    masks = (torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(1)) > 0.5).float()
    idx = torch.tensor([0, 0, 1])
    base = make_teacher("siglip")(images, masks, idx)
    low = make_teacher("siglip", global_patch_removal=True, patch_removal_threshold=-10.0)
    torch.testing.assert_close(low(images, masks, idx), base)  # nothing removed
    high = make_teacher("siglip", global_patch_removal=True, patch_removal_threshold=10.0)
    out, valid = high(images, masks, idx, return_valid=True)  # everything removed
    assert not valid.any() and torch.isfinite(out).all()
