"""Helpers for teacher tests: tiny random-init teachers, masks, shared checks.

Imported by module name (pytest puts this rootless test directory on sys.path)."""

import torch
import torch.nn.functional as F

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


def uniform_attention_pool_reference(teacher, pixels: torch.Tensor, pool_mlp: bool = True) -> torch.Tensor:
    """The model's own MAP head with attention forced to be uniform over patch tokens.

    Zeroing the latent query projection makes every key score 0, so softmax attention is
    uniform; an additive mask excludes prefix (CLS) tokens, which the pool would otherwise
    also average. Everything after the attention runs through ``AttentionPoolLatent.forward``
    and the trunk / open_clip heads (``pool_mlp=False`` drops the pool MLP as TextRegion does).
    """
    import copy

    model = copy.deepcopy(teacher.model)
    trunk = model.visual.trunk
    ap = trunk.attn_pool
    ap.q.weight.data.zero_()
    if ap.q.bias is not None:
        ap.q.bias.data.zero_()
    if not pool_mlp:
        ap.mlp = None
    x = trunk.forward_features(pixels)
    npt = getattr(trunk, "num_prefix_tokens", 0)
    mask = torch.zeros(x.shape[0], 1, 1, x.shape[1])
    mask[..., :npt] = float("-inf")
    y = ap(x, attn_mask=mask if npt else None)
    y = trunk.head(trunk.head_drop(trunk.fc_norm(y)))
    return F.normalize(model.visual.head(y), dim=-1)


def check_map_teacher(family: str, images: torch.Tensor) -> None:
    """Full-mask token == uniform-attention pooled output, for both pool_mlp settings."""
    for pool_mlp in (True, False):
        t = make_teacher(family, pool_mlp=pool_mlp)
        got = t(images, torch.ones(2, 64, 64), torch.tensor([0, 1]))
        pixels = (images - t.pixel_mean) / t.pixel_std
        with torch.no_grad():
            ref = uniform_attention_pool_reference(t, pixels, pool_mlp)
            own = F.normalize(t.model.encode_image(pixels), dim=-1)  # learned-query attention
        torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
        # the real (non-uniform) pool differs, so the equality above is not vacuous
        assert (own - got).abs().max() > 1e-4


def check_partial_mask_is_masked_mean(family: str, images: torch.Tensor) -> None:
    """A quadrant mask == pooled value mean over exactly those patches (binary default)."""
    t = make_teacher(family)
    m = torch.zeros(1, 64, 64)
    m[:, :32, 32:] = 1  # top-right 2x2 patches of the 4x4 grid
    m[:, 0, 0] = 1  # one pixel: area fraction > 0 -> binary mode counts patch 0 fully
    got = t(images[:1], m)
    pixels = (images[:1] - t.pixel_mean) / t.pixel_std
    with torch.no_grad():
        v = t.pool_values(t.trunk_tokens(pixels))[0]  # [16, C]
        sel = torch.tensor([0, 2, 3, 6, 7])
        ref = F.normalize(t.head(v[sel].mean(0, keepdim=True)), dim=-1)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
