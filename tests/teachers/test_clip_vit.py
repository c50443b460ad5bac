"""CLIP ViT TextRegion teacher vs. a plain re-implementation through the model's modules."""

import pytest
import torch
import torch.nn.functional as F
from teacher_helpers import check_order_and_empty, make_teacher

from region_sam3.teachers import TeacherWeightsError, create_teacher, strip_teacher_state
from region_sam3.teachers.tiny_models import TINY_CLIP


def reference_clip_token(model, pixels: torch.Tensor, weights: torch.Tensor, mlp: bool) -> torch.Tensor:
    """TextRegion CLIP recipe written out step by step (no hooks), weights ``[P]``."""
    vis = model.visual
    x = vis.conv1(pixels).flatten(2).transpose(1, 2)
    cls = vis.class_embedding.view(1, 1, -1).expand(x.shape[0], -1, -1)
    x = torch.cat([cls, x], dim=1) + vis.positional_embedding
    x = vis.ln_pre(x)
    for blk in vis.transformer.resblocks[:-1]:
        x = blk(x)
    blk = vis.transformer.resblocks[-1]
    _, _, v = F.linear(blk.ln_1(x), blk.attn.in_proj_weight, blk.attn.in_proj_bias).chunk(3, dim=-1)
    r = blk.attn.out_proj(weights @ v[0, 1:])
    if mlp:
        r = r + blk.mlp(blk.ln_2(r))
    return F.normalize(vis.ln_post(r) @ vis.proj, dim=-1)


@pytest.mark.parametrize("pool_mlp", [True, False])
def test_full_mask_matches_reference(images: torch.Tensor, pool_mlp: bool) -> None:
    t = make_teacher("clip_vit", pool_mlp=pool_mlp)
    full = torch.ones(1, 64, 64)
    got = t(images[:1], full)
    pixels = (images[:1] - t.pixel_mean) / t.pixel_std
    with torch.no_grad():
        ref = reference_clip_token(t.model, pixels, torch.ones(16), mlp=pool_mlp)
    torch.testing.assert_close(got[0], ref, atol=1e-5, rtol=1e-5)
    # the region token is not the CLS token (sanity that the comparison is meaningful)
    with torch.no_grad():
        cls_tok = F.normalize(t.model.encode_image(pixels), dim=-1)[0]
    assert (cls_tok - got[0]).abs().max() > 1e-3


def test_soft_mask_weights_are_area_fractions(images: torch.Tensor) -> None:
    t = make_teacher("clip_vit")
    m = torch.zeros(1, 64, 64)
    m[:, :, :8] = 1.0  # left half of the first patch column -> weight 0.5 there
    got = t(images[:1], m)
    w = torch.zeros(4, 4)
    w[:, 0] = 0.5
    pixels = (images[:1] - t.pixel_mean) / t.pixel_std
    with torch.no_grad():
        ref = reference_clip_token(t.model, pixels, w.flatten(), mlp=True)
    torch.testing.assert_close(got[0], ref, atol=1e-5, rtol=1e-5)


def test_order_and_empty(images: torch.Tensor) -> None:
    check_order_and_empty(make_teacher("clip_vit"), images)


def test_tiles_stitching_matches_per_tile(images: torch.Tensor) -> None:
    t_tiles = make_teacher("clip_vit", resize_mode="tiles")
    t_res = make_teacher("clip_vit")
    wide = torch.cat([images[0], images[1]], dim=-1)[None]  # [1, 3, 64, 128] -> 2 tiles
    right = torch.zeros(1, 64, 128)
    right[:, 16:48, 64 + 16:64 + 48] = 1
    got = t_tiles(wide, right)
    ref = t_res(images[1:2], right[:, :, 64:])
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)


def test_frozen_discipline(images: torch.Tensor) -> None:
    t = make_teacher("clip_vit")
    t.train()
    assert not t.training and not any(m.training for m in t.modules())
    assert not any(p.requires_grad for p in t.parameters())
    out = t(images.requires_grad_(True), torch.ones(2, 64, 64), torch.tensor([0, 1]))
    assert out.grad_fn is None and not out.requires_grad
    sd = {"teacher.model.x": 1, "student.w": 2}
    assert strip_teacher_state(sd) == {"student.w": 2}


def test_text_embeddings_normalised_and_template_sensitive() -> None:
    t = make_teacher("clip_vit")
    a = t.encode_text(["cat", "dog"])
    assert a.shape == (2, 32)
    torch.testing.assert_close(a.norm(dim=-1), torch.ones(2))
    b = t.encode_text(["cat", "dog"], templates=["a photo of a {}.", "a drawing of a {}."])
    assert (a - b).abs().max() > 1e-4


def test_config_hash_tracks_options_and_weights() -> None:
    h = make_teacher("clip_vit").config_hash()
    assert make_teacher("clip_vit").config_hash() == h
    assert make_teacher("clip_vit", global_patch_removal=True).config_hash() != h
    assert make_teacher("clip_vit", seed=1).config_hash() != h


def test_missing_weight_file_names_path(tmp_path) -> None:
    missing = tmp_path / "weights" / "clip.bin"
    with pytest.raises(TeacherWeightsError, match=str(missing)) as e:
        create_teacher("clip_vit", TINY_CLIP, pretrained=str(missing))
    assert "teacher.pretrained" in str(e.value)


def test_unknown_tag_is_an_error() -> None:
    with pytest.raises(TeacherWeightsError, match="not a known tag"):
        create_teacher("clip_vit", TINY_CLIP, pretrained="no_such_tag")
