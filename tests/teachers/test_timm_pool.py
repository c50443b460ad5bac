"""Attention-pool teachers (region_sam3/teachers/timm_pool.py): SigLIP/SigLIP2 (timm
VisionTransformer + AttentionPoolLatent) and PE-Core (timm Eva + AttentionPoolLatent, CLS, RoPE)."""

import pytest
import torch
from teacher_helpers import (
    check_map_teacher,
    check_order_and_empty,
    check_partial_mask_is_masked_mean,
    make_teacher,
)

FAMILIES = ["siglip", "pe_core"]


@pytest.mark.parametrize("family", FAMILIES)
def test_full_mask_equals_uniform_attention_pool(family: str, images: torch.Tensor) -> None:
    check_map_teacher(family, images)


@pytest.mark.parametrize("family", FAMILIES)
def test_partial_mask_is_masked_mean(family: str, images: torch.Tensor) -> None:
    check_partial_mask_is_masked_mean(family, images)


@pytest.mark.parametrize("family", FAMILIES)
def test_order_and_empty(family: str, images: torch.Tensor) -> None:
    check_order_and_empty(make_teacher(family), images)


@pytest.mark.parametrize("family", FAMILIES)
def test_tiles_native_size_equals_resize(family: str, images: torch.Tensor) -> None:
    masks = (torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(3)) > 0.3).float()
    idx = torch.tensor([0, 1, 1])
    a = make_teacher(family)(images, masks, idx)
    b = make_teacher(family, resize_mode="tiles")(images, masks, idx)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_frozen_and_text(family: str) -> None:
    t = make_teacher(family)
    t.train(True)
    assert not any(m.training for m in t.modules())
    assert not any(p.requires_grad for p in t.parameters())
    txt = t.encode_text(["cat", "dog", "tree"])
    out = t(torch.rand(1, 3, 64, 64), torch.ones(1, 64, 64))
    assert txt.shape == (3, out.shape[1]) and out.grad_fn is None
