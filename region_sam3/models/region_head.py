"""Region-token head: mask -> region token -> reasoning -> refined mask, iterated T times.

The head is driven by :class:`region_sam3.models.region_seg_head.RegionAwareSegmentationHead`,
which hands it SAM3's base mask logits M^0, the decoder's last-layer queries, the pixel
decoder's instance embeddings and the fusion-encoder memory. For t = 1..T:

1. ``A = sigmoid(M^{t-1})`` (detached when ``detach_between_iters``: the masks steer pooling and
   attention, gradients flow through the residual logit chain and the features instead).
2. Mask-guided pooling (one batched matmul, :mod:`region_sam3.models.pooling`) from the instance
   embeddings (optionally area-downsampled to ``pool_resolution``) and from the encoder memory.
3. ``R^t = LayerNorm(q^{t-1} + MLP(concat pooled))`` with ``q^0`` = decoder last-layer queries.
4. Region self-attention (inter-region competition), post-norm.
5. Mask2Former masked cross-attention region -> memory tokens (low-res grid, attend where the
   resized mask > ``mask_threshold``; a row that would be all-masked is left unmasked), post-norm.
6. FFN, post-norm.
7. ``M^t = M^{t-1} + g * einsum(mask_embed(R^t), instance_embeds)`` (``residual=True``), or
   ``M^t = einsum(...)`` (``residual=False``); ``g`` = optional text gate
   ``sigmoid(<R_k, W t> / sqrt(C) + b)`` with ``t`` the masked mean of the text prompt tokens.
8. Optional write-back (t < T only, the last one would be unused):
   ``instance_embeds += einsum(softmax_k(M^t), g * W R^t)``.

Initialisation (residual mode): the last linear of ``mask_embed`` and the write-back projection
are zero-initialised, so at init every ``M^t`` equals ``M^0`` exactly and the instance embeddings
are untouched: adding the head cannot destroy the pretrained masks. In fresh mode
(``residual=False``) ``mask_embed`` is initialised by
:func:`region_sam3.models.region_seg_head.build_region_seg_head` as a copy of SAM3's
``mask_predictor.mask_embed``.

Weights are shared across iterations (``share_weights=True``, a recurrent refinement block,
constant parameter count in T) or one block per iteration.

DAC / one-to-many queries: in training SAM3 appends ``num_o2o`` one-to-many queries. When the
caller passes ``num_o2o`` and ``Q == 2 * num_o2o`` we mirror SAM3's DAC decoder: self-attention
and the write-back softmax use only the one-to-one regions (o2m duplicates must not compete with
or overwrite the o2o ones); every other step is per-region and runs on all queries.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from region_sam3.models.pooling import POOL_MODES, region_pool, resize_masks
from region_sam3.models.region_blocks import (
    MaskedCrossAttention,
    RegionRefineBlock,
    masked_mean_text,
    region_attn_mask,
)

__all__ = [
    "MaskedCrossAttention",
    "RegionHead",
    "RegionRefineBlock",
    "masked_mean_text",
    "region_attn_mask",
]


class RegionHead(nn.Module):
    """Closed-loop region-token refinement head (all new parameters of Region-aware SAM3).

    Every constructor argument is a plain int/float/bool/str (``iter_loss_weights``: a list of
    floats), so the class is directly Hydra-instantiable from ``conf/model/region_head/*.yaml``.

    Args:
        d_model: SAM3 hidden size (256 for the official model).
        num_iters: T, number of refinement iterations; 0 = plain SAM3.
        pool_pixel: pool from the pixel decoder's instance embeddings.
        pool_memory: pool from the fusion-encoder memory (72^2 at full size).
        pool_resolution: area-downsample the instance embeddings to this side before pooling
            (0 = native, 288 at full size).
        detach_between_iters: detach ``sigmoid(M^{t-1})`` used for pooling/attention masks.
        use_self_attn / use_cross_attn / use_ffn: sub-block switches.
        use_writeback: region -> pixel write-back into the instance embeddings.
        use_text_gating: gate each region's logit update by its similarity to the text prompt.
        residual: ``M^t = M^{t-1} + delta`` (True) or ``M^t = delta`` (False).
        embed_dim: size of ``region_embed`` (teacher dimension); 0 = no projection
            (``region_embed`` is then ``R^T`` itself).
        num_heads: heads of both attentions.
        dim_feedforward: FFN hidden size.
        dropout: dropout in attention/FFN.
        mask_threshold: masked cross-attention threshold on the soft masks.
        share_weights: one block shared by all iterations (else one block per iteration).
        zero_init_delta: zero-init the last layer of the refinement ``mask_embed`` (residual mode).
        pool_chunk_size: query chunk size for pooling (0 = one batched matmul).
        pool_eps: pooling denominator epsilon.
        pool_mode: pooling weights, one of ``POOL_MODES`` (``soft`` = sigmoid(M); ``sharpened``,
            ``thresholded``, ``box_normalised``, ``roi_align``: see
            :mod:`region_sam3.models.pooling`). Attention masks always use sigmoid(M).
        pool_tau: temperature of ``sharpened``.
        pool_threshold: foreground threshold of ``thresholded`` / ``box_normalised`` /
            ``roi_align`` boxes.
        pool_roi_size: RoIAlign bins per side (``roi_align``).
        iter_loss_weights: per-iteration mask-loss weights for t = 0..T (consumed by the loss,
            stored here so it travels with the head config); default all 1.
    """

    def __init__(
        self,
        d_model: int = 256,
        num_iters: int = 2,
        pool_pixel: bool = True,
        pool_memory: bool = True,
        pool_resolution: int = 0,
        detach_between_iters: bool = True,
        use_self_attn: bool = True,
        use_cross_attn: bool = True,
        use_ffn: bool = True,
        use_writeback: bool = False,
        use_text_gating: bool = False,
        residual: bool = True,
        embed_dim: int = 0,
        num_heads: int = 8,
        dim_feedforward: int = 1024,
        dropout: float = 0.0,
        mask_threshold: float = 0.5,
        share_weights: bool = True,
        zero_init_delta: bool = True,
        pool_chunk_size: int = 0,
        pool_eps: float = 1e-6,
        iter_loss_weights: Sequence[float] | None = None,
        pool_mode: str = "soft",
        pool_tau: float = 0.25,
        pool_threshold: float = 0.5,
        pool_roi_size: int = 7,
    ) -> None:
        super().__init__()
        if pool_mode not in POOL_MODES:
            raise ValueError(f"model.region_head.pool_mode={pool_mode!r}: use one of {POOL_MODES}")
        self.pool_mode = str(pool_mode)
        self.pool_tau = float(pool_tau)
        self.pool_threshold = float(pool_threshold)
        self.pool_roi_size = int(pool_roi_size)
        if num_iters < 0:
            raise ValueError("num_iters must be >= 0")
        if d_model % num_heads != 0:
            raise ValueError(f"d_model={d_model} not divisible by num_heads={num_heads}")
        self.d_model = int(d_model)
        self.num_iters = int(num_iters)
        self.pool_pixel = bool(pool_pixel)
        self.pool_memory = bool(pool_memory)
        self.pool_resolution = int(pool_resolution)
        self.detach_between_iters = bool(detach_between_iters)
        self.use_self_attn = bool(use_self_attn)
        self.use_cross_attn = bool(use_cross_attn)
        self.use_ffn = bool(use_ffn)
        self.use_writeback = bool(use_writeback)
        self.use_text_gating = bool(use_text_gating)
        self.residual = bool(residual)
        self.embed_dim = int(embed_dim)
        self.num_heads = int(num_heads)
        self.mask_threshold = float(mask_threshold)
        self.share_weights = bool(share_weights)
        self.pool_chunk_size = int(pool_chunk_size) or None
        self.pool_eps = float(pool_eps)
        if iter_loss_weights is None:
            iter_loss_weights = [1.0] * (self.num_iters + 1)
        self.iter_loss_weights = tuple(float(w) for w in iter_loss_weights)
        if len(self.iter_loss_weights) != self.num_iters + 1:
            raise ValueError(
                f"iter_loss_weights needs num_iters+1={self.num_iters + 1} entries, "
                f"got {len(self.iter_loss_weights)}"
            )

        num_sources = int(self.pool_pixel) + int(self.pool_memory)
        n_blocks = 0 if self.num_iters == 0 else (1 if self.share_weights else self.num_iters)
        self.blocks = nn.ModuleList(
            RegionRefineBlock(
                d_model=self.d_model,
                num_sources=num_sources,
                num_heads=self.num_heads,
                dim_feedforward=int(dim_feedforward),
                dropout=float(dropout),
                use_self_attn=self.use_self_attn,
                use_cross_attn=self.use_cross_attn,
                use_ffn=self.use_ffn,
                use_writeback=self.use_writeback,
                use_text_gating=self.use_text_gating,
                zero_init_delta=bool(zero_init_delta) and self.residual,
                mask_threshold=self.mask_threshold,
            )
            for _ in range(n_blocks)
        )
        self.embed_proj = (
            nn.Linear(self.d_model, self.embed_dim) if self.embed_dim > 0 else nn.Identity()
        )

    def extra_repr(self) -> str:
        return (
            f"num_iters={self.num_iters}, pool_pixel={self.pool_pixel}, "
            f"pool_memory={self.pool_memory}, pool_mode={self.pool_mode}, "
            f"residual={self.residual}, "
            f"writeback={self.use_writeback}, text_gating={self.use_text_gating}"
        )

    def _pool_sources(self, pix: Tensor, memory: Tensor) -> list[Tensor]:
        sources = []
        if self.pool_pixel:
            feats = pix
            if self.pool_resolution > 0 and max(feats.shape[-2:]) > self.pool_resolution:
                feats = F.adaptive_avg_pool2d(feats, self.pool_resolution)
            sources.append(feats)
        if self.pool_memory:
            sources.append(memory)
        return sources

    def _block(self, t: int) -> RegionRefineBlock:
        return self.blocks[0 if self.share_weights else t - 1]

    def forward(
        self,
        mask_logits: Tensor,
        queries: Tensor,
        instance_embeds: Tensor,
        memory: Tensor,
        text: Tensor | None = None,
        num_o2o: int | None = None,
    ) -> dict[str, Tensor | list[Tensor]]:
        """Run T refinement iterations.

        Args:
            mask_logits: [B,Q,H,W] base logits M^0 (H=W=288 at full size).
            queries: [B,Q,C] decoder last-layer queries q^0.
            instance_embeds: [B,C,H,W] pixel-decoder instance embeddings.
            memory: [B,C,Hm,Wm] spatial fusion-encoder memory (72^2 at full size).
            text: [B,C] pooled text prompt (needed only with ``use_text_gating``; None disables
                gating for this call).
            num_o2o: number of one-to-one queries when Q also holds DAC one-to-many queries
                (``Q == 2*num_o2o``); None = all queries are one group.

        Returns:
            dict with ``masks``: list of T+1 tensors [B,Q,H,W] (M^0..M^T, M^0 is ``mask_logits``
            itself), ``region_tokens``: [B,Q,C] (R^T; q^0 when T=0), ``region_embed``:
            [B,Q,D] (``embed_proj(R^T)``), and ``region_gate``: [B,Q] (last iteration's text
            gate; present only when gating ran).
        """
        q = queries
        m = mask_logits
        masks = [m]
        gate: Tensor | None = None
        n_q = q.shape[1]
        split = num_o2o if (num_o2o is not None and num_o2o > 0 and n_q == 2 * num_o2o) else None
        mem_hw = tuple(memory.shape[-2:])
        mem_tokens = memory.flatten(2).transpose(1, 2)  # [B,HmWm,C] batch-first keys/values
        pix = instance_embeds
        text = text if self.use_text_gating else None
        for t in range(1, self.num_iters + 1):
            blk = self._block(t)
            src = m.detach() if self.detach_between_iters else m
            a = src.sigmoid()  # [B,Q,H,W]
            a_low = resize_masks(a.float(), mem_hw)  # [B,Q,Hm,Wm], shared by pooling + attention
            pooled = [
                region_pool(src, f, self.pool_mode, self.pool_tau, self.pool_threshold,
                            self.pool_roi_size, self.pool_eps, self.pool_chunk_size,
                            prob=a, prob_low=a_low)
                for f in self._pool_sources(pix, memory)
            ]
            r = blk(blk.tokens(q, pooled), mem_tokens, a_low, split)
            delta, gate = blk.mask_delta(r, pix, text)
            m = m + delta if self.residual else delta
            masks.append(m)
            if self.use_writeback and t < self.num_iters:  # the last one would be unused
                pix = blk.writeback(pix, m, r, gate, split)
            q = r

        out: dict[str, Tensor | list[Tensor]] = {
            "masks": masks,
            "region_tokens": q,
            "region_embed": self.embed_proj(q),
        }
        if gate is not None:
            out["region_gate"] = gate
        return out
