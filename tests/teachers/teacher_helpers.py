"""Helpers for teacher tests: tiny random-init teachers, masks, shared checks.

Imported by module name (pytest puts this rootless test directory on sys.path)."""

import torch

from region_sam3.teachers import create_teacher
from region_sam3.teachers.tiny_models import TINY_CLIP, TINY_PE, TINY_SIGLIP

TINY = {"clip_vit": TINY_CLIP, "siglip": TINY_SIGLIP, "pe_core": TINY_PE}


def make_teacher(family: str, seed: int = 0, **options):
    torch.manual_seed(seed)
    return create_teacher(family, TINY[family], pretrained=None, **options)


def make_images() -> torch.Tensor:
    g = torch.Generator().manual_seed(123)
    return torch.rand(2, 3, 64, 64, generator=g)


def random_masks(n: int, h: int = 64, w: int = 64, seed: int = 7) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, h, w, generator=g) > 0.5).float()


def check_order_and_empty(teacher, images: torch.Tensor) -> None:
    """Permuting masks permutes outputs; empty masks give finite rows flagged invalid."""
    masks = random_masks(5)
    masks[3] = 0
    idx = torch.tensor([0, 1, 0, 1, 1])
    out, valid = teacher(images, masks, idx, return_valid=True)
    assert out.shape[0] == 5 and torch.isfinite(out).all()
    assert valid.tolist() == [True, True, True, False, True]
    perm = torch.tensor([4, 2, 0, 3, 1])
    out_p = teacher(images, masks[perm], idx[perm])
    torch.testing.assert_close(out_p, out[perm], atol=1e-5, rtol=1e-5)
    # distinct regions really give distinct embeddings (the permutation check can fail)
    assert (out[0] - out[1]).abs().max() > 1e-3
    norms = out[valid].norm(dim=-1)
    torch.testing.assert_close(norms, torch.ones_like(norms))
