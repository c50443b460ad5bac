"""Building blocks of the region head (:mod:`region_sam3.models.region_head`): text pooling,
Mask2Former-style masked cross-attention and the refinement block (self-attention ->
masked cross-attention -> FFN, post-norm).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from sam3.model.model_misc import MLP
from torch import Tensor

__all__ = ["MaskedCrossAttention", "RegionRefineBlock", "masked_mean_text", "region_attn_mask"]


def masked_mean_text(prompt: Tensor, prompt_mask: Tensor | None) -> Tensor:
    """Mean of the valid prompt tokens.

    Args:
        prompt: [L,B,C] sequence-first prompt tokens (SAM3 convention).
        prompt_mask: [B,L] key padding mask, True = padding; None = all valid.

    Returns:
        [B,C]; a prompt with no valid token gives zeros.
    """
    if prompt_mask is None:
        return prompt.mean(0)
    valid = (~prompt_mask).to(prompt.dtype).transpose(0, 1).unsqueeze(-1)  # [L,B,1]
    return (prompt * valid).sum(0) / valid.sum(0).clamp_min(1.0)


def region_attn_mask(masks_low: Tensor, threshold: float) -> Tensor:
    """Mask2Former attention mask from soft region masks (SDPA convention).

    Args:
        masks_low: [B,Q,H,W] soft masks already on the key grid.
        threshold: attend where mask > threshold.

    Returns:
        [B,1,Q,H*W] bool, True = allowed to attend (broadcast over heads, so no per-head copy).
        Rows with no allowed key are set all-True (attend everywhere) so softmax never sees a
        fully masked row (no NaN).
    """
    allowed = masks_low.flatten(2) > threshold  # [B,Q,N]
    allowed = allowed | ~allowed.any(-1, keepdim=True)
    return allowed.unsqueeze(1)


class MaskedCrossAttention(nn.Module):
    """Multi-head cross-attention regions -> key tokens with a boolean mask shared by all heads.

    Same maths as ``nn.MultiheadAttention`` but through ``F.scaled_dot_product_attention`` with a
    [B,1,Q,N] mask: ``nn.MultiheadAttention`` wants the mask repeated per head ([B*h,Q,N], and
    converts it to float), which at Q=400 (DAC), N=72^2, 8 heads is 16x more memory.

    Args:
        d_model: embedding size C.
        num_heads: heads (C % heads == 0).
        dropout: attention dropout (training only).
    """

    def __init__(self, d_model: int, num_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.dropout = dropout
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model)
        self.v_proj = nn.Linear(d_model, d_model)
        self.out_proj = nn.Linear(d_model, d_model)

    def forward(self, query: Tensor, key: Tensor, allowed: Tensor | None = None) -> Tensor:
        """Attend.

        Args:
            query: [B,Q,C] region tokens.
            key: [B,N,C] key/value tokens (values = keys).
            allowed: [B,1,Q,N] bool, True = may attend; None = no mask.

        Returns:
            [B,Q,C].
        """
        b, q, c = query.shape
        h = self.num_heads

        def heads(x: Tensor) -> Tensor:  # [B,L,C] -> [B,h,L,C/h]
            return x.view(b, x.shape[1], h, c // h).transpose(1, 2)

        o = F.scaled_dot_product_attention(
            heads(self.q_proj(query)),
            heads(self.k_proj(key)),
            heads(self.v_proj(key)),
            attn_mask=allowed,
            dropout_p=self.dropout if self.training else 0.0,
        )
        return self.out_proj(o.transpose(1, 2).reshape(b, q, c))


class RegionRefineBlock(nn.Module):
    """One refinement step (Mask2Former-style decoder layer on region tokens).

    :meth:`forward` runs self-attention -> masked cross-attention -> FFN (post-norm);
    :meth:`tokens`, :meth:`mask_delta` and :meth:`writeback` are the steps before and after it
    (maths: :mod:`region_sam3.models.region_head`).
    """

    def __init__(
        self,
        d_model: int,
        num_sources: int,
        num_heads: int,
        dim_feedforward: int,
        dropout: float,
        use_self_attn: bool,
        use_cross_attn: bool,
        use_ffn: bool,
        use_writeback: bool,
        use_text_gating: bool,
        zero_init_delta: bool,
        mask_threshold: float = 0.5,
    ) -> None:
        super().__init__()
        c = d_model
        self.d_model = int(d_model)
        self.use_self_attn = bool(use_self_attn)
        self.use_cross_attn = bool(use_cross_attn)
        self.use_ffn = bool(use_ffn)
        self.mask_threshold = float(mask_threshold)
        self.pool_mlp = (
            nn.Sequential(nn.Linear(num_sources * c, c), nn.ReLU(inplace=True), nn.Linear(c, c))
            if num_sources > 0
            else None
        )
        self.token_norm = nn.LayerNorm(c)
        self.dropout = nn.Dropout(dropout)
        if use_self_attn:
            self.self_attn = nn.MultiheadAttention(c, num_heads, dropout=dropout, batch_first=True)
            self.self_attn_norm = nn.LayerNorm(c)
        if use_cross_attn:
            self.cross_attn = MaskedCrossAttention(c, num_heads, dropout=dropout)
            self.cross_attn_norm = nn.LayerNorm(c)
        if use_ffn:
            self.ffn = nn.Sequential(
                nn.Linear(c, dim_feedforward),
                nn.ReLU(inplace=True),
                nn.Dropout(dropout),
                nn.Linear(dim_feedforward, c),
            )
            self.ffn_norm = nn.LayerNorm(c)
        # Same shape as SAM3's MaskPredictor.mask_embed (3-layer MLP C->C->C->C).
        self.mask_embed = MLP(c, c, c, 3)
        if use_writeback:
            self.writeback_proj = nn.Linear(c, c)
            nn.init.zeros_(self.writeback_proj.weight)
            nn.init.zeros_(self.writeback_proj.bias)
        if use_text_gating:
            self.text_proj = nn.Linear(c, c)
            self.gate_bias = nn.Parameter(torch.zeros(()))
        if zero_init_delta:
            nn.init.zeros_(self.mask_embed.layers[-1].weight)
            nn.init.zeros_(self.mask_embed.layers[-1].bias)

    def tokens(self, queries: Tensor, pooled: list[Tensor]) -> Tensor:
        """``R = LayerNorm(q + MLP(concat pooled))``.

        Args:
            queries: [B,Q,C] previous region tokens (decoder queries at t=1).
            pooled: per-source [B,Q,C] pooled vectors (empty when no source is pooled).

        Returns:
            [B,Q,C] region tokens.
        """
        r = queries
        if self.pool_mlp is not None:
            r = queries + self.pool_mlp(torch.cat(pooled, -1).to(queries.dtype))
        return self.token_norm(r)

    def forward(
        self, r: Tensor, mem_tokens: Tensor, masks_low: Tensor, split: int | None = None
    ) -> Tensor:
        """Self-attention -> masked cross-attention -> FFN, each post-norm and switchable.

        Args:
            r: [B,Q,C] region tokens.
            mem_tokens: [B,N,C] memory tokens (keys/values of the cross-attention).
            masks_low: [B,Q,Hm,Wm] soft masks on the memory grid (Hm*Wm = N); attend where
                > ``mask_threshold``.
            split: number of one-to-one regions under DAC (only they attend to each other);
                None = all regions are one group.

        Returns:
            [B,Q,C] refined region tokens.
        """
        if self.use_self_attn:
            if split is None:
                r = self.self_attn_norm(
                    r + self.dropout(self.self_attn(r, r, r, need_weights=False)[0])
                )
            else:
                r1, r2 = r[:, :split], r[:, split:]
                r1 = r1 + self.dropout(self.self_attn(r1, r1, r1, need_weights=False)[0])
                r = self.self_attn_norm(torch.cat([r1, r2], 1))
        if self.use_cross_attn:
            allowed = region_attn_mask(masks_low, self.mask_threshold)
            ca = self.cross_attn(r, mem_tokens.to(r.dtype), allowed)
            r = self.cross_attn_norm(r + self.dropout(ca))
        if self.use_ffn:
            r = self.ffn_norm(r + self.dropout(self.ffn(r)))
        return r

    def mask_delta(
        self, r: Tensor, pix: Tensor, text: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """Logit update ``g * einsum(mask_embed(R), pix)`` and the text gate ``g``.

        Args:
            r: [B,Q,C] region tokens.
            pix: [B,C,H,W] instance embeddings.
            text: [B,C] pooled text prompt; None (or a block without gating) = no gate.

        Returns:
            delta [B,Q,H,W] and gate [B,Q] (None when no gate ran).
        """
        delta = torch.einsum("bqc,bchw->bqhw", self.mask_embed(r), pix)
        if text is None or not hasattr(self, "text_proj"):
            return delta, None
        tk = self.text_proj(text.to(r.dtype))  # [B,C]
        gate = torch.sigmoid(
            torch.einsum("bqc,bc->bq", r, tk) / math.sqrt(self.d_model) + self.gate_bias
        )
        return delta * gate[..., None, None].to(delta.dtype), gate

    def writeback(
        self, pix: Tensor, m: Tensor, r: Tensor, gate: Tensor | None, split: int | None = None
    ) -> Tensor:
        """``pix + einsum(softmax_k(M), g * W R)`` (one-to-one regions only under DAC).

        Args:
            pix: [B,C,H,W] instance embeddings.
            m: [B,Q,H,W] refined logits.
            r: [B,Q,C] region tokens.
            gate: [B,Q] text gate or None.
            split: number of one-to-one regions, or None.

        Returns:
            [B,C,H,W] updated instance embeddings.
        """
        m_w, r_w = (m, r) if split is None else (m[:, :split], r[:, :split])
        w = self.writeback_proj(r_w)  # [B,Q',C]
        if gate is not None:
            w = w * (gate if split is None else gate[:, :split])[..., None].to(w.dtype)
        prob = m_w.softmax(dim=1)  # over regions k, per pixel
        return pix + torch.einsum("bqhw,bqc->bchw", prob.to(w.dtype), w).to(pix.dtype)
