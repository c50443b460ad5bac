"""Tiny random-init teacher architectures for tests and CPU smoke runs.

Registers, once per process and only with the stock libraries' public hooks:

* two timm entrypoints (``region_sam3_tiny_siglip_patch16_64``: SigLIP-style
  ``VisionTransformer`` without CLS and a MAP pool; ``region_sam3_tiny_pe_patch16_64``:
  PE-Core-style ``Eva`` with CLS, RoPE and a MAP pool), because open_clip's
  ``TimmModel`` only accepts registered timm model names;
* three open_clip model configs (``RegionSAM3-tiny-CLIP``, ``-MAP-ViT`` (SigLIP-style), ``-PE``) via
  ``open_clip.add_model_config`` on JSON files written to a private temp directory
  (keeps them importable from an installed wheel without package data).

All use 64 px inputs with 16 px patches (4 x 4 grid) and width 64.
"""

from __future__ import annotations

import json
import tempfile
from functools import partial
from pathlib import Path
from typing import Any

TINY_CLIP = "RegionSAM3-tiny-CLIP"
TINY_SIGLIP = "RegionSAM3-tiny-MAP-ViT"  # no "siglip" in the name: open_clip would pick the SigLIP tokenizer
TINY_PE = "RegionSAM3-tiny-PE"

_TINY_TEXT = {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}

TINY_OPEN_CLIP_CONFIGS: dict[str, dict[str, Any]] = {
    TINY_CLIP: {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
        "text_cfg": dict(_TINY_TEXT),
    },
    TINY_SIGLIP: {
        # timm_proj "none": the trunk output (width 64) is the embedding, as in SigLIP2.
        "embed_dim": 64,
        "init_logit_bias": -10,
        "custom_text": True,
        "vision_cfg": {
            "image_size": 64,
            "timm_model_name": "region_sam3_tiny_siglip_patch16_64",
            "timm_model_pretrained": False,
            "timm_pool": "map",
            "timm_proj": "none",
        },
        "text_cfg": dict(_TINY_TEXT, width=64, no_causal_mask=True, pool_type="last", proj_bias=True),
    },
    TINY_PE: {
        # timm_proj null: the trunk's own Linear head (64 -> 32) projects, as in PE-Core.
        "embed_dim": 32,
        "custom_text": True,
        "vision_cfg": {
            "image_size": 64,
            "timm_model_name": "region_sam3_tiny_pe_patch16_64",
            "timm_model_pretrained": False,
            "timm_pool": "map",
            "timm_proj": None,
        },
        "text_cfg": dict(_TINY_TEXT),
    },
}

_REGISTERED = False
_TIMM_KEYS_TO_DROP = ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir", "features_only")


def _clean(kwargs: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in kwargs.items() if k not in _TIMM_KEYS_TO_DROP}


def region_sam3_tiny_siglip_patch16_64(pretrained: bool = False, **kwargs: Any):  # noqa: ANN201
    """SigLIP-style tiny ViT: no CLS token, MAP attention pool, post-norm."""
    from timm.models.vision_transformer import VisionTransformer

    if pretrained:
        raise ValueError("tiny test trunks have no pretrained weights")
    args = dict(img_size=64, patch_size=16, embed_dim=64, depth=2, num_heads=2,
                class_token=False, global_pool="map")
    return VisionTransformer(**dict(args, **_clean(kwargs)))


def region_sam3_tiny_pe_patch16_64(pretrained: bool = False, **kwargs: Any):  # noqa: ANN201
    """PE-Core-style tiny Eva: CLS token, 2D RoPE, pre-transformer norm, MAP pool."""
    from timm.layers import LayerNorm
    from timm.models.eva import Eva

    if pretrained:
        raise ValueError("tiny test trunks have no pretrained weights")
    args = dict(
        img_size=64, patch_size=16, embed_dim=64, depth=2, num_heads=2, mlp_ratio=4.0,
        global_pool="map", attn_type="rope", use_pre_transformer_norm=True,
        use_rot_pos_emb=True, ref_feat_shape=(4, 4), rope_grid_offset=1.0,
        rope_grid_indexing="xy", attn_pool_num_heads=2, attn_pool_mlp_ratio=4.0,
        norm_layer=partial(LayerNorm, eps=1e-5),
    )
    return Eva(**dict(args, **_clean(kwargs)))


def register_tiny_models() -> None:
    """Idempotently register the tiny timm trunks and open_clip configs."""
    global _REGISTERED
    if _REGISTERED:
        return
    import open_clip
    from timm.models import is_model, register_model

    for fn in (region_sam3_tiny_siglip_patch16_64, region_sam3_tiny_pe_patch16_64):
        if not is_model(fn.__name__):
            register_model(fn)
    cfg_dir = Path(tempfile.mkdtemp(prefix="region_sam3_open_clip_cfg_"))
    for name, cfg in TINY_OPEN_CLIP_CONFIGS.items():
        (cfg_dir / f"{name}.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(cfg_dir)
    _REGISTERED = True
