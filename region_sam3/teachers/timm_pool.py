"""TextRegion teachers for open_clip ``TimmModel`` towers with a MAP attention pool.

Covers SigLIP / SigLIP2 (timm ``VisionTransformer``) and PE-Core (timm ``Eva``; in
open_clip 3.3.0 ``PE-Core-*`` configs are timm ``vit_pe_core_*`` trunks). Both end in
``trunk.attn_pool`` = timm ``AttentionPoolLatent``, whose forward is::

    q = q_norm(q(latent)); k, v = kv(x); x = sdpa(q, k_norm(k), v)
    x = proj_drop(proj(x)); x = x + mlp(norm(x)); x = x[:, 0]

followed by ``trunk.fc_norm -> trunk.head_drop -> trunk.head`` and open_clip's
``visual.head``. TextRegion replaces the keys with a constant, so every key scores the
same and attention over the (masked) patches becomes their mean of ``v``. This module
reproduces exactly that, i.e. the pool with constant keys:

    token = visual.head(trunk.head(fc_norm(y + mlp(norm(y))))),  y = proj(masked_mean(v))

TextRegion's own code skips the pool MLP residual for SigLIP2/PE; ``pool_mlp=False``
reproduces that variant.
"""

from __future__ import annotations

import torch.nn as nn
from torch import Tensor

from region_sam3.teachers.base import RegionTeacher


class TimmAttnPoolTeacher(RegionTeacher):
    """TextRegion teacher for timm trunks pooled by ``AttentionPoolLatent``.

    Defaults: binary masks, normalised (masked mean) -- what constant-key attention
    with a boolean attention mask computes in TextRegion -- and the pool MLP applied.
    """

    family = "timm_attn_pool"

    def __init__(self, model: nn.Module, model_name: str, **kwargs) -> None:
        kwargs.setdefault("mask_mode", "binary")
        kwargs.setdefault("normalize_weights", True)
        kwargs.setdefault("pool_mlp", True)
        super().__init__(model, model_name, **kwargs)
        trunk = getattr(model.visual, "trunk", None)
        ap = getattr(trunk, "attn_pool", None)
        if ap is None or not hasattr(ap, "kv") or not hasattr(ap, "latent"):
            raise TypeError(
                f"{model_name}: expected an open_clip TimmModel whose trunk.attn_pool is a "
                "timm AttentionPoolLatent (timm_pool='map')"
            )
        if ap.latent_len != 1:
            raise TypeError(f"{model_name}: attention pools with latent_len != 1 are not supported")
        self.trunk = trunk
        self.attn_pool = ap

    @property
    def patch_size(self) -> tuple[int, int]:
        p = self.trunk.patch_embed.patch_size
        return (p, p) if isinstance(p, int) else tuple(p)

    @property
    def value_dim(self) -> int:
        return int(self.attn_pool.kv.out_features // 2)

    def trunk_tokens(self, pixels: Tensor) -> Tensor:
        """``trunk.forward_features`` with prefix (CLS/register) tokens dropped: ``[B, P, C]``."""
        x = self.trunk.forward_features(pixels)
        return x[:, getattr(self.trunk, "num_prefix_tokens", 0):]

    def pool_values(self, x: Tensor) -> Tensor:
        """Attention-pool values ``kv(x)[..., C:]`` for patch tokens ``[B, P, C]``."""
        ap = self.attn_pool
        if ap.pos_embed is not None:
            if ap.pos_embed.shape[0] != x.shape[1]:
                raise ValueError("attention pool has a fixed-size pos_embed; use the native input size")
            x = x + ap.pos_embed.unsqueeze(0).to(x.dtype)
        return ap.kv(x)[..., self.value_dim:]

    def patch_features(self, pixels: Tensor) -> tuple[Tensor, Tensor]:
        x = self.trunk_tokens(pixels)
        # TextRegion's global patch removal uses the trunk tokens (``last_blk_value``).
        return x, self.pool_values(x)

    def head(self, pooled: Tensor) -> Tensor:
        ap, trunk = self.attn_pool, self.trunk
        y = ap.proj_drop(ap.proj(pooled))
        if self.pool_mlp and ap.mlp is not None:
            y = y + ap.mlp(ap.norm(y))
        y = trunk.head(trunk.head_drop(trunk.fc_norm(y)))
        return self.model.visual.head(y)


class SigLIPTeacher(TimmAttnPoolTeacher):
    """SigLIP / SigLIP2 (timm ``VisionTransformer`` trunk, no CLS token)."""

    family = "siglip"


class PECoreTeacher(TimmAttnPoolTeacher):
    """Perception Encoder Core (timm ``Eva`` trunk with CLS token, RoPE)."""

    family = "pe_core"
