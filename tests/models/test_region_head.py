"""Region head inside a standalone tiny SAM3 UniversalSegmentationHead."""

from __future__ import annotations

import pytest
import torch
from sam3.model.act_ckpt_utils import activation_ckpt_wrapper
from sam3.model.maskformer_segmentation import PixelDecoder, UniversalSegmentationHead
from sam3.model.model_misc import MultiheadAttentionWrapper

from region_sam3.models.region_head import (
    MaskedCrossAttention,
    RegionHead,
    masked_mean_text,
    region_attn_mask,
)
from region_sam3.models.region_seg_head import (
    RegionAwareSegmentationHead,
    build_region_seg_head,
    collect_iter_masks,
    iter_mask_keys,
)

C = 32
B = 2
Q = 6
L_DEC = 3
L_TXT = 4
FPN = (32, 16, 8)  # memory grid = last level = 8x8


def _upstream(seed: int = 0, presence: bool = False) -> UniversalSegmentationHead:
    torch.manual_seed(seed)
    pd = PixelDecoder(hidden_dim=C, num_upsampling_stages=3, interpolation_mode="nearest")
    cap = MultiheadAttentionWrapper(num_heads=4, dropout=0, embed_dim=C)
    head = UniversalSegmentationHead(
        hidden_dim=C,
        upsampling_stages=3,
        pixel_decoder=pd,
        aux_masks=False,
        presence_head=presence,
        act_ckpt=False,
        cross_attend_prompt=cap,
    )
    return head.eval()


def _inputs(seed: int = 1, q: int = Q) -> dict:
    g = torch.Generator().manual_seed(seed)
    feats = [torch.randn(B, C, s, s, generator=g) for s in FPN]
    prompt_mask = torch.zeros(B, L_TXT, dtype=torch.bool)
    prompt_mask[1, 2:] = True
    return dict(
        backbone_feats=feats,
        obj_queries=torch.randn(L_DEC, B, q, C, generator=g),
        image_ids=torch.arange(B),
        encoder_hidden_states=torch.randn(FPN[-1] ** 2, B, C, generator=g),
        prompt=torch.randn(L_TXT, B, C, generator=g),
        prompt_mask=prompt_mask,
    )


def _region(num_iters: int = 2, **kw) -> RegionHead:
    torch.manual_seed(123)
    kw.setdefault("num_heads", 4)
    kw.setdefault("dim_feedforward", 64)
    return RegionHead(d_model=C, num_iters=num_iters, **kw)


@pytest.mark.parametrize("presence", [False, True])
def test_t0_bit_identical_to_upstream(presence: bool) -> None:
    up = _upstream(presence=presence)
    x = _inputs()
    with torch.no_grad():
        ref = up(**x)
        head = build_region_seg_head(up, _region(0, embed_dim=16))
        out = head(**x)
    for k in ("pred_masks", "semantic_seg"):
        assert torch.equal(out[k], ref[k]), k
    if presence:
        assert torch.equal(out["presence_logit"], ref["presence_logit"])
    else:
        assert out["presence_logit"] is None
    assert torch.equal(out["pred_masks_iter0"], ref["pred_masks"])
    assert torch.equal(out["region_tokens"], x["obj_queries"][-1])
    assert out["region_embed"].shape == (B, Q, 16)


def test_t0_direct_construction_loads_upstream_state_dict() -> None:
    up = _upstream()
    torch.manual_seed(0)
    head = RegionAwareSegmentationHead(
        hidden_dim=C,
        upsampling_stages=3,
        pixel_decoder=PixelDecoder(hidden_dim=C, num_upsampling_stages=3),
        cross_attend_prompt=MultiheadAttentionWrapper(num_heads=4, dropout=0, embed_dim=C),
    ).eval()
    missing, unexpected = head.load_state_dict(up.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("region_head.") for k in missing)
    x = _inputs()
    with torch.no_grad():
        assert torch.equal(head(**x)["pred_masks"], up(**x)["pred_masks"])


def test_parameter_names_and_module_reuse() -> None:
    up = _upstream()
    up_keys = list(up.state_dict().keys())
    up_params = dict(up.named_parameters())
    head = build_region_seg_head(
        up, _region(2, use_writeback=True, use_text_gating=True, embed_dim=8)
    )
    keys = list(head.state_dict().keys())
    assert keys[: len(up_keys)] == up_keys  # same names, same order
    new = keys[len(up_keys) :]
    assert new and all(k.startswith("region_head.") for k in new)
    # reused, not copied
    for n, p in head.named_parameters():
        if not n.startswith("region_head."):
            assert p is up_params[n]
    assert head.pixel_decoder is up.pixel_decoder
    assert head.mask_predictor.mask_embed is up.mask_predictor.mask_embed
    # upstream module dict untouched by the swap
    assert "region_head" not in dict(up.named_children())
    assert set(iter_mask_keys(2)) <= set(head.instance_keys)
    assert {"pred_masks", "region_tokens", "region_embed", "region_gate"} <= set(head.instance_keys)


def test_init_preserves_base_masks() -> None:
    up = _upstream()
    x = _inputs()
    head = build_region_seg_head(up, _region(3, use_writeback=True, use_text_gating=True))
    with torch.no_grad():
        ref = up(**x)["pred_masks"]
        out = head(**x)
    for m in collect_iter_masks(out, 3):
        assert torch.equal(m, ref)
    assert out["pred_masks_iter3"] is out["pred_masks"]


def test_t2_forward_backward() -> None:
    up = _upstream().train()
    x = _inputs()
    head = build_region_seg_head(
        up,
        _region(2, zero_init_delta=False, use_writeback=True, use_text_gating=True, embed_dim=12),
    )
    head.train()
    out = head(**x)
    assert out["pred_masks"].shape == (B, Q, FPN[0], FPN[0])
    assert out["region_tokens"].shape == (B, Q, C)
    assert out["region_embed"].shape == (B, Q, 12)
    assert out["region_gate"].shape == (B, Q)
    iters = collect_iter_masks(out, 2)
    assert len(iters) == 3 and all(torch.isfinite(m).all() for m in iters)
    assert not torch.equal(iters[0], iters[2])  # refinement did something
    loss = sum(m.sigmoid().mean() for m in iters) + out["region_embed"].pow(2).mean()
    loss.backward()
    grads = {n: p.grad for n, p in head.region_head.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values()), [
        n for n, g in grads.items() if g is None
    ]
    nonzero = [n for n, g in grads.items() if g.abs().sum() > 0]
    # everything except the write-back of the last iteration (unused with T=2 only at t<T) gets signal
    assert len(nonzero) >= 0.9 * len(grads), sorted(set(grads) - set(nonzero))
    assert head.mask_predictor.mask_embed.layers[0].weight.grad is not None


def test_zero_init_last_layer_gets_gradient() -> None:
    head = build_region_seg_head(_upstream(), _region(1)).train()
    out = head(**_inputs())
    out["pred_masks"].sigmoid().mean().backward()
    last = head.region_head.blocks[0].mask_embed.layers[-1]
    assert last.weight.grad is not None and last.weight.grad.abs().sum() > 0


SWITCHES = [
    dict(use_self_attn=False),
    dict(use_cross_attn=False),
    dict(use_ffn=False),
    dict(use_writeback=True),
    dict(use_text_gating=True),
    dict(residual=False),
    dict(detach_between_iters=False),
    dict(share_weights=False),
    dict(pool_pixel=False),
    dict(pool_memory=False),
    dict(pool_pixel=False, pool_memory=False),
    dict(pool_resolution=16),
    dict(pool_chunk_size=4),
    dict(dropout=0.1),
]


@pytest.mark.parametrize("kw", SWITCHES, ids=lambda d: ",".join(f"{k}={v}" for k, v in d.items()))
def test_switches(kw: dict) -> None:
    up = _upstream()
    region = _region(2, zero_init_delta=False, **kw)
    head = build_region_seg_head(up, region).train()
    out = head(**_inputs())
    assert out["pred_masks"].shape == (B, Q, FPN[0], FPN[0])
    assert torch.isfinite(out["pred_masks"]).all()
    out["pred_masks"].sigmoid().mean().backward()
    got = [n for n, p in head.region_head.named_parameters() if p.grad is not None]
    assert got
    blk = head.region_head.blocks[0]
    assert hasattr(blk, "self_attn") == kw.get("use_self_attn", True)
    assert hasattr(blk, "cross_attn") == kw.get("use_cross_attn", True)
    assert hasattr(blk, "ffn") == kw.get("use_ffn", True)
    assert hasattr(blk, "writeback_proj") == kw.get("use_writeback", False)
    assert len(head.region_head.blocks) == (1 if kw.get("share_weights", True) else 2)


def test_fresh_mode_copies_upstream_mask_embed() -> None:
    up = _upstream()
    head = build_region_seg_head(up, _region(1, residual=False))
    for a, b in zip(
        head.region_head.blocks[0].mask_embed.parameters(),
        up.mask_predictor.mask_embed.parameters(),
    ):
        assert torch.equal(a, b) and a is not b


def test_empty_masks_no_nan() -> None:
    rh = _region(2, zero_init_delta=False, use_writeback=True).train()
    g = torch.Generator().manual_seed(3)
    logits = torch.full((B, Q, 32, 32), -50.0)  # every region empty ...
    logits[0, 0] = 50.0  # ... but one full
    logits[1, 1, :4, :4] = 50.0  # ... and one tiny
    queries = torch.randn(B, Q, C, generator=g, requires_grad=True)
    pix = torch.randn(B, C, 32, 32, generator=g, requires_grad=True)
    mem = torch.randn(B, C, 8, 8, generator=g, requires_grad=True)
    out = rh(logits, queries, pix, mem)
    for m in out["masks"]:
        assert torch.isfinite(m).all()
    assert torch.isfinite(out["region_tokens"]).all()
    out["masks"][-1].mean().backward()
    for t in (queries, pix, mem):
        assert torch.isfinite(t.grad).all()


def test_region_attn_mask_rows() -> None:
    a = torch.zeros(1, 3, 2, 2)
    a[0, 1, 0, 0] = 0.9
    m = region_attn_mask(a, 0.5)
    assert m.shape == (1, 1, 3, 4)
    assert m[0, 0, 0].all()  # empty region: all keys allowed
    assert m[0, 0, 1].tolist() == [True, False, False, False]


def test_masked_cross_attention_matches_nn_mha() -> None:
    torch.manual_seed(0)
    mine = MaskedCrossAttention(C, 4).eval()
    ref = torch.nn.MultiheadAttention(C, 4, batch_first=True).eval()
    w = ref.in_proj_weight.detach().chunk(3)
    bias = ref.in_proj_bias.detach().chunk(3)
    with torch.no_grad():
        for lin, wi, bi in zip((mine.q_proj, mine.k_proj, mine.v_proj), w, bias):
            lin.weight.copy_(wi)
            lin.bias.copy_(bi)
        mine.out_proj.load_state_dict(ref.out_proj.state_dict())
    q, k = torch.randn(2, 5, C), torch.randn(2, 9, C)
    allowed = region_attn_mask(torch.rand(2, 5, 3, 3), 0.5)
    out = mine(q, k, allowed)
    blocked = (~allowed[:, 0]).repeat_interleave(4, dim=0)  # nn.MHA: [B*h,Q,N], True = blocked
    exp = ref(q, k, k, attn_mask=blocked, need_weights=False)[0]
    torch.testing.assert_close(out, exp, rtol=1e-5, atol=1e-5)


def test_bf16_autocast_forward() -> None:
    head = build_region_seg_head(
        _upstream(), _region(2, zero_init_delta=False, use_writeback=True, use_text_gating=True)
    )
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = head(**_inputs())
    for k in ("pred_masks", "pred_masks_iter1", "region_tokens", "region_gate"):
        assert torch.isfinite(out[k].float()).all(), k


def test_masked_mean_text() -> None:
    p = torch.arange(12.0).view(3, 2, 2)  # [L=3,B=2,C=2]
    pm = torch.tensor([[False, False, True], [True, True, True]])
    out = masked_mean_text(p, pm)
    torch.testing.assert_close(out[0], p[:2, 0].mean(0))
    assert torch.equal(out[1], torch.zeros(2))


def test_dac_o2m_queries_do_not_affect_o2o() -> None:
    up = _upstream()
    head = build_region_seg_head(up, _region(2, zero_init_delta=False), num_o2o_queries=Q)
    head.train()
    x = _inputs(q=2 * Q)
    out1 = head(**x)
    x2 = dict(x)
    oq = x["obj_queries"].clone()
    oq[:, :, Q:] += 1.0  # perturb only the one-to-many half
    x2["obj_queries"] = oq
    out2 = head(**x2)
    torch.testing.assert_close(out1["pred_masks"][:, :Q], out2["pred_masks"][:, :Q])
    assert not torch.allclose(out1["pred_masks"][:, Q:], out2["pred_masks"][:, Q:])
    # without the split, self-attention mixes o2m into o2o
    head.num_o2o_queries = None
    out3 = head(**x2)
    assert not torch.allclose(out1["pred_masks"][:, :Q], out3["pred_masks"][:, :Q])


def test_activation_checkpoint_wrapper_keeps_inputs() -> None:
    up = _upstream()
    head = build_region_seg_head(
        up, _region(1, zero_init_delta=False, use_text_gating=True)
    ).train()
    x = _inputs()
    ref = head(**x)
    out = activation_ckpt_wrapper(head)(**x, act_ckpt_enable=True)
    torch.testing.assert_close(out["pred_masks"], ref["pred_masks"])
    torch.testing.assert_close(out["region_gate"], ref["region_gate"])
    out["pred_masks"].mean().backward()
    assert head.region_head.blocks[0].mask_embed.layers[-1].weight.grad is not None


def test_iter_loss_weights_validation() -> None:
    assert RegionHead(d_model=C, num_iters=2, num_heads=4).iter_loss_weights == (1.0, 1.0, 1.0)
    with pytest.raises(ValueError):
        RegionHead(d_model=C, num_iters=2, num_heads=4, iter_loss_weights=[1.0])
    with pytest.raises(ValueError):
        build_region_seg_head(_upstream(), RegionHead(d_model=64, num_iters=1, num_heads=4))


@pytest.mark.parametrize("name", ["default", "off", "full", "lite"])
def test_hydra_configs_instantiate(name: str) -> None:
    from pathlib import Path

    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    conf_dir = Path(__file__).resolve().parents[2] / "conf"
    with initialize_config_dir(config_dir=str(conf_dir), version_base=None):
        cfg = compose(overrides=[f"+model/region_head={name}", "+model/sam3=tiny"])
    rh = instantiate(cfg.model.region_head)
    assert isinstance(rh, RegionHead)
    assert rh.d_model == cfg.model.sam3.arch.d_model == 64
    assert len(rh.iter_loss_weights) == rh.num_iters + 1
    assert rh.num_iters == {"default": 2, "off": 0, "full": 3, "lite": 1}[name]
