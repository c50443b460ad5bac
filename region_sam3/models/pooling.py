"""Mask-guided pooling: soft region masks -> region feature vectors.

For soft masks ``A`` [B,Q,H,W] (values in [0,1], e.g. ``sigmoid(mask_logits)``) and features
``F`` [B,C,H',W'] the pooled region vector of query ``k`` is

    r_k = sum_i a_{k,i} f_i / (sum_i a_{k,i} + eps)

i.e. the mask-weighted mean of the features. It is computed as ONE batched matmul
(``'bqn,bnc->bqc'``), the transpose of SAM3's own mask einsum ``'bqc,bchw->bqhw'``: it costs
about ``2*Q*C*H'*W'`` FLOPs and never loops over regions.

Numerics (documented contract):
* Accumulation happens in ``float32`` (or ``float64`` when an input is float64) with autocast
  disabled, so bf16/fp16 activations do not lose the sum over ~83k pixels of a 288^2 map.
* The result is returned in that accumulation dtype (fp32 for fp32/bf16/fp16 inputs, fp64 for
  fp64 inputs) unless ``out_dtype`` is given. Region tokens are small ([B,Q,C]), so keeping them
  in fp32 is cheap and downstream LayerNorms run in fp32 under autocast anyway.
* An empty mask (all zeros) gives a zero vector (numerator 0, denominator ``eps``): no NaN.

Mask resizing (``resize_masks``): masks are resized to the feature grid *after* the sigmoid.
Downsampling uses ``area`` interpolation (= average pooling for integer factors, adaptive
average pooling otherwise), so a resized value is the occupancy fraction of the low-res cell and
the total mass is preserved up to the area ratio; upsampling uses ``bilinear``
(``align_corners=False``), matching how SAM3 upsamples its mask logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "mask_pool",
    "mask_pool_seq",
    "resize_masks",
    "seq_to_spatial",
    "naive_mask_pool",
]


def _acc_dtype(*tensors: Tensor) -> torch.dtype:
    """Accumulation dtype: float64 if any input is float64, else float32."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def resize_masks(masks: Tensor, size: tuple[int, int]) -> Tensor:
    """Resize soft masks to a feature grid.

    Args:
        masks: [B,Q,H,W] soft masks (probabilities, not logits).
        size: target (H',W').

    Returns:
        [B,Q,H',W'] masks, same dtype. ``area`` when shrinking both sides, ``bilinear`` otherwise;
        identity when the size already matches.
    """
    h, w = masks.shape[-2:]
    th, tw = int(size[0]), int(size[1])
    if (h, w) == (th, tw):
        return masks
    if th <= h and tw <= w:
        return F.interpolate(masks, size=(th, tw), mode="area")
    return F.interpolate(masks, size=(th, tw), mode="bilinear", align_corners=False)


def seq_to_spatial(memory: Tensor, hw: tuple[int, int]) -> Tensor:
    """Reshape sequence-first encoder memory to a spatial map.

    Args:
        memory: [N,B,C] sequence-first tokens with ``N >= H*W``; only the first ``H*W`` tokens are
            spatial (same convention as SAM3's ``SegmentationHead._embed_pixels``).
        hw: the spatial grid (H,W), row-major.

    Returns:
        [B,C,H,W] view-compatible tensor (a permuted copy of the first H*W tokens).
    """
    h, w = int(hw[0]), int(hw[1])
    n = h * w
    if memory.shape[0] < n:
        raise ValueError(f"memory has {memory.shape[0]} tokens, need at least H*W={n}")
    # [HW,B,C] -> [B,C,HW] -> [B,C,H,W]; same permute as SAM3's _embed_pixels.
    return memory[:n].permute(1, 2, 0).reshape(memory.shape[1], memory.shape[2], h, w)


def mask_pool(
    masks: Tensor,
    feats: Tensor,
    eps: float = 1e-6,
    chunk_size: int | None = None,
    out_dtype: torch.dtype | None = None,
) -> Tensor:
    """Mask-weighted mean of features, batched over all regions.

    Args:
        masks: [B,Q,H,W] soft masks in [0,1]. Resized to the feature grid with
            :func:`resize_masks` when the spatial size differs. ``B`` may be 1 with ``feats``
            having ``B`` > 1 (or vice versa): the batch dims broadcast.
        feats: [B,C,H',W'] features.
        eps: added to the mask mass; an empty mask returns zeros.
        chunk_size: if set, process queries in chunks of this size to bound the memory of the
            fp32 mask copy ([B,chunk,H'W'] instead of [B,Q,H'W']); result is identical up to
            float rounding of the same per-chunk matmul.
        out_dtype: dtype of the result; default is the accumulation dtype (fp32, or fp64 for
            fp64 inputs).

    Returns:
        [B,Q,C] pooled region vectors.
    """
    if masks.dim() != 4 or feats.dim() != 4:
        raise ValueError(
            f"expected masks [B,Q,H,W] and feats [B,C,H,W], got {masks.shape}, {feats.shape}"
        )
    acc = _acc_dtype(masks, feats)
    device_type = feats.device.type
    # autocast would silently downcast the matmul to bf16; the sums over ~1e5 pixels need fp32.
    with torch.autocast(device_type=device_type, enabled=False):
        # [B,C,H,W] -> [B,N,C]
        f = feats.to(acc).flatten(2).transpose(1, 2)
        size = feats.shape[-2:]
        q = masks.shape[1]
        if chunk_size is None or chunk_size >= q:
            out = _pool_block(masks, f, size, acc, eps)
        else:
            out = torch.cat(
                [
                    _pool_block(masks[:, s : s + chunk_size], f, size, acc, eps)
                    for s in range(0, q, chunk_size)
                ],
                dim=1,
            )
    return out if out_dtype is None else out.to(out_dtype)


def _pool_block(masks: Tensor, f: Tensor, size: torch.Size, acc: torch.dtype, eps: float) -> Tensor:
    """One batched pooling matmul.

    Args:
        masks: [B,q,H,W] soft masks (any float dtype).
        f: [B,N,C] flattened features in ``acc`` dtype (N = prod(size)).
        size: feature grid (H',W').
        acc: accumulation dtype.
        eps: denominator epsilon.

    Returns:
        [B,q,C] in ``acc``.
    """
    # Resize in the accumulation dtype: area-averaging bf16 would already lose mass.
    a = resize_masks(masks.to(acc), tuple(size)).flatten(2)  # [B,q,N]
    num = torch.matmul(a, f)  # 'bqn,bnc->bqc', broadcasts B=1 against B
    den = a.sum(-1, keepdim=True) + eps  # [B,q,1]
    return num / den


def mask_pool_seq(
    masks: Tensor,
    memory: Tensor,
    hw: tuple[int, int],
    eps: float = 1e-6,
    chunk_size: int | None = None,
    out_dtype: torch.dtype | None = None,
) -> Tensor:
    """:func:`mask_pool` over sequence-first encoder memory.

    Args:
        masks: [B,Q,H,W] soft masks.
        memory: [N,B,C] sequence-first tokens (N >= H_m*W_m; extra tokens ignored).
        hw: (H_m,W_m) of the spatial part of ``memory``.

    Returns:
        [B,Q,C] pooled vectors (see :func:`mask_pool` for dtype).
    """
    return mask_pool(
        masks, seq_to_spatial(memory, hw), eps=eps, chunk_size=chunk_size, out_dtype=out_dtype
    )


def naive_mask_pool(masks: Tensor, feats: Tensor, eps: float = 1e-6) -> Tensor:
    """Reference implementation with an explicit loop over batch and regions (tests/benchmarks).

    Args:
        masks: [B,Q,H,W] soft masks, same grid as ``feats`` (no resizing here).
        feats: [B,C,H,W].

    Returns:
        [B,Q,C] in the accumulation dtype.
    """
    acc = _acc_dtype(masks, feats)
    b, q = masks.shape[:2]
    out = torch.zeros(b, q, feats.shape[1], dtype=acc, device=feats.device)
    for bi in range(b):
        for k in range(q):
            a = masks[bi, k].to(acc)  # [H,W]
            f = feats[bi].to(acc)  # [C,H,W]
            out[bi, k] = (a[None] * f).sum((-2, -1)) / (a.sum() + eps)
    return out
