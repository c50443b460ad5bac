"""Weight decay goes to matrices; biases, norms and true embedding tables are excluded."""

from __future__ import annotations

import torch
from helpers import compose_sam3
from hydra.utils import instantiate

from region_sam3.lit.optim import build_param_groups
from region_sam3.models.region_head import RegionHead

PREFIX = "segmentation_head.region_head."
# Every region-head parameter that decays, with every optional part switched on.
REGION_HEAD_DECAY = {
    "blocks.0.cross_attn.q_proj.weight", "blocks.0.cross_attn.k_proj.weight",
    "blocks.0.cross_attn.v_proj.weight", "blocks.0.cross_attn.out_proj.weight",
    "blocks.0.ffn.0.weight", "blocks.0.ffn.3.weight",
    "blocks.0.mask_embed.layers.0.weight", "blocks.0.mask_embed.layers.1.weight",
    "blocks.0.mask_embed.layers.2.weight",
    "blocks.0.pool_mlp.0.weight", "blocks.0.pool_mlp.2.weight",
    "blocks.0.self_attn.in_proj_weight", "blocks.0.self_attn.out_proj.weight",
    "blocks.0.text_proj.weight", "blocks.0.writeback_proj.weight",
    "embed_proj.weight",
}


def _decay_by_name(model) -> dict[str, bool]:
    groups = build_param_groups(model, lr=1e-4, weight_decay=0.1)
    ids = {id(p): g["weight_decay"] > 0 for g in groups for p in g["params"]}
    return {n: ids[id(p)] for n, p in model.named_parameters() if id(p) in ids}


def test_region_head_matrices_decay_and_nothing_else():
    torch.manual_seed(0)
    head = RegionHead(64, 2, embed_dim=32, use_writeback=True, use_text_gating=True,
                      num_heads=4, dim_feedforward=128)
    net = instantiate(compose_sam3("tiny", ["freeze=[]"]), region_head=head)
    decay = _decay_by_name(net)
    region = {n.removeprefix(PREFIX): d for n, d in decay.items() if n.startswith(PREFIX)}
    assert {n for n, d in region.items() if d} == REGION_HEAD_DECAY
    # the rest of the head: biases (incl. the scalar gate bias) and LayerNorms
    assert all(n.endswith("bias") or "norm" in n for n, d in region.items() if not d)
    # SAM3's own embedding tables / positional embeddings do not decay; projections do
    for name in ("transformer.decoder.query_embed.weight", "transformer.decoder.presence_token.weight",
                 "transformer.decoder.reference_points.weight",
                 "backbone.vision_backbone.trunk.pos_embed",
                 "backbone.language_backbone.encoder.positional_embedding",
                 "backbone.language_backbone.encoder.token_embedding.weight",
                 "transformer.decoder.layers.0.self_attn.in_proj_bias"):
        assert decay[name] is False, name
    for name in ("backbone.language_backbone.encoder.text_projection",
                 "segmentation_head.mask_predictor.mask_embed.layers.0.weight",
                 "backbone.vision_backbone.trunk.patch_embed.proj.weight"):
        assert decay[name] is True, name


def test_extra_no_decay_globs_add_exclusions():
    head = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.LayerNorm(2))
    groups = build_param_groups(head, lr=1.0, weight_decay=0.1, no_decay=["0.weight"])
    assert [g["name"] for g in groups] == ["default_no_decay"]
