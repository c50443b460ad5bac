"""The teacher groups masks per image on the host: every index form gives the same rows."""

import pytest
import torch
from teacher_helpers import make_teacher, random_masks

from region_sam3.teachers import global_patch_removal_keep


@pytest.mark.parametrize("removal", [False, True])
@pytest.mark.parametrize("order", [[0, 0, 1, 1, 1], [1, 0, 1, 0, 1]], ids=["packed", "mixed"])
def test_index_forms_agree_with_one_call_per_image(images, removal, order) -> None:
    teacher = make_teacher("clip_vit", global_patch_removal=removal, patch_removal_threshold=0.0)
    masks = random_masks(5)
    masks[2] = 0  # an empty mask: invalid, finite
    ref = torch.zeros(5, teacher.embed_dim)
    ref_valid = torch.zeros(5, dtype=torch.bool)
    for i in range(2):
        rows = [r for r, n in enumerate(order) if n == i]
        ref[rows], ref_valid[rows] = teacher(images[i:i + 1], masks[rows], return_valid=True)
    for index in (order, tuple(order), torch.tensor(order)):
        out, valid = teacher(images, masks, index, return_valid=True)
        torch.testing.assert_close(out, ref, atol=1e-6, rtol=1e-6)
        assert torch.equal(valid, ref_valid) and not valid[2]
    with pytest.raises(ValueError, match="out of range"):
        teacher(images, masks, [0, 0, 2, 1, 1])
    with pytest.raises(ValueError, match="mask_image_index"):
        teacher(images, masks, [0, 1])


def test_patch_removal_ignores_empty_masks_without_dropping_rows() -> None:
    """Empty masks are weighted out, not indexed out: same answer as without them."""
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(12, 6, generator=g)
    masks = (torch.rand(4, 12, generator=g) > 0.6).float()
    padded = torch.cat([torch.zeros(1, 12), masks[:2], torch.zeros(2, 12), masks[2:]])
    for thr in (-0.2, 0.0, 0.07, 0.3):
        assert torch.equal(global_patch_removal_keep(feats, padded, thr),
                           global_patch_removal_keep(feats, masks, thr))
    assert global_patch_removal_keep(feats, torch.zeros(3, 12), 0.5).all()
