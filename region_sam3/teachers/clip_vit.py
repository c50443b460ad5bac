"""TextRegion teacher for open_clip CLIP ViTs (OpenAI / LAION weights).

Recipe (TextRegion ``clip_value_with_sam2_attn``), all through the model's own modules:

* ``x``  = input of ``visual.transformer.resblocks[-1]`` ``[B, 1+P, W]`` (captured by a
  forward pre-hook that stops the forward there, so the last block never runs);
* ``v``  = value third of ``F.linear(blk.ln_1(x), attn.in_proj_weight, attn.in_proj_bias)``,
  CLS dropped;
* ``r``  = ``ls_1(attn.out_proj(M @ v))``; with ``pool_mlp``: ``r = r + ls_2(mlp(ln_2(r)))``
  (TextRegion does this; the attention residual ``x`` is *not* added);
* token = ``normalize(ln_post(r) @ proj)``.

Per-head attention with mask weights equals ``M @ v`` on the concatenated heads, so
heads need no explicit split.
"""

from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from region_sam3.teachers.base import RegionTeacher


class _StopForward(Exception):
    """Raised by the pre-hook to skip everything after the captured input."""


class ClipViTTeacher(RegionTeacher):
    """TextRegion teacher on an open_clip ``VisionTransformer`` (``model.visual``).

    Defaults follow TextRegion for CLIP: soft masks, **unnormalised** masked sum,
    block MLP applied to the pooled value.
    """

    family = "clip_vit"

    def __init__(self, model: nn.Module, model_name: str, **kwargs) -> None:
        kwargs.setdefault("mask_mode", "soft")
        kwargs.setdefault("normalize_weights", False)
        kwargs.setdefault("pool_mlp", True)
        super().__init__(model, model_name, **kwargs)
        visual = model.visual
        if not hasattr(visual, "transformer") or not hasattr(visual.transformer, "resblocks"):
            raise TypeError(f"{model_name}: visual tower is not an open_clip VisionTransformer")
        if getattr(visual, "attn_pool", None) is not None:
            raise TypeError(f"{model_name}: attention-pool ViTs (CoCa-style) are not supported")
        self._block = visual.transformer.resblocks[-1]
        if not isinstance(self._block.attn, nn.MultiheadAttention):
            raise TypeError(f"{model_name}: last block has no nn.MultiheadAttention")

    @property
    def patch_size(self) -> tuple[int, int]:
        p = self.model.visual.patch_size
        return (p, p) if isinstance(p, int) else tuple(p)

    @property
    def value_dim(self) -> int:
        return int(self._block.attn.embed_dim)

    def last_block_input(self, pixels: Tensor) -> Tensor:
        """``[B, 1+P, W]`` batch-first input of the last residual block."""
        store: dict[str, Tensor] = {}

        def hook(_module: nn.Module, args: tuple) -> None:
            store["x"] = args[0]
            raise _StopForward

        handle = self._block.register_forward_pre_hook(hook)
        try:
            self.model.visual(pixels)
        except _StopForward:
            pass
        finally:
            handle.remove()
        x = store["x"]
        if not getattr(self.model.visual.transformer, "batch_first", True):
            x = x.transpose(0, 1)  # LND -> NLD
        return x

    def values(self, x: Tensor) -> Tensor:
        """Last-block values ``[B, P, W]`` (CLS dropped) from the block input ``x``."""
        attn = self._block.attn
        qkv = F.linear(self._block.ln_1(x), attn.in_proj_weight, attn.in_proj_bias)
        return qkv.chunk(3, dim=-1)[2][:, 1:]

    def patch_features(self, pixels: Tensor) -> tuple[Tensor, Tensor]:
        v = self.values(self.last_block_input(pixels))
        # Global patch removal compares patches through their values, as the values
        # are what gets pooled.
        return v, v

    def head(self, pooled: Tensor) -> Tensor:
        blk, visual = self._block, self.model.visual
        r = blk.ls_1(blk.attn.out_proj(pooled))
        if self.pool_mlp:
            r = r + blk.ls_2(blk.mlp(blk.ln_2(r)))
        r = visual.ln_post(r)
        return r @ visual.proj if visual.proj is not None else r
