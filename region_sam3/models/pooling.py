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

Pooling variants for small regions (``region_pool(..., mode=...)``, config
``model.region_head.pool_mode``). Soft pooling sums the sigmoid tail over the whole grid: a
region covering < 1% of a 288^2 grid with background logits around -4 gets only about half of
its weight from inside its own mask. The variants (all batched over B and Q, no loop):

* ``soft``: ``w = sigmoid(M)`` (the default, unchanged).
* ``sharpened``: ``w = sigmoid(M / tau)``: the tail shrinks exponentially (tau=0.25:
  sigmoid(-4) = 0.018 -> sigmoid(-16) = 1e-7).
* ``thresholded``: ``w = [sigmoid(M) > thr]``; a region with no pixel above ``thr`` falls back to
  its soft weights (never an all-zero row).
* ``box_normalised``: soft weights restricted to the bounding box of ``sigmoid(M) > thr`` (the
  whole grid when empty), then normalised as usual.
* ``roi_align``: box pooling (the OVSAM / Mask R-CNN comparison): ``torchvision.ops.roi_align``
  on that box (``roi_size``^2 bins, 2x2 samples each), mean over bins; the mask shape is ignored.

Official-size cost (B find-queries x Q=200 regions, masks at 288^2): ``sharpened`` /
``thresholded`` / ``box_normalised`` add one elementwise pass and one extra [B,Q,288,288] fp32
temporary (~66 MB per find-query, as ``soft``'s own sigmoid); the box needs two ``any``
reductions ([B,Q,288] each). ``roi_align`` costs ``B*Q*roi_size^2*4*C`` bilinear samples
(200*49*4*256 ~ 10 MFLOP per find-query, negligible next to the pooling matmul's
2*Q*C*H'*W' ~ 8.5 GFLOP at 288^2) and never materialises a [B,Q,N] weight matrix.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

POOL_MODES = ("soft", "sharpened", "thresholded", "box_normalised", "roi_align")

__all__ = [
    "POOL_MODES",
    "mask_boxes",
    "pooling_weights",
    "region_pool",
    "roi_pool",
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


def mask_boxes(prob: Tensor, threshold: float = 0.5) -> tuple[Tensor, Tensor]:
    """Bounding boxes of ``prob > threshold``, batched.

    Args:
        prob: [B,Q,H,W] soft masks.
        threshold: foreground threshold.

    Returns:
        boxes: [B,Q,4] ``(x1, y1, x2, y2)`` in grid units, ``x2``/``y2`` exclusive (pixel ``i``
        spans ``[i, i+1]``); an empty mask gets the whole grid ``(0, 0, W, H)``.
        nonempty: [B,Q] bool.
    """
    h, w = prob.shape[-2:]
    fg = prob > threshold
    rows, cols = fg.any(-1), fg.any(-2)  # [B,Q,H], [B,Q,W]
    nonempty = rows.any(-1)

    def span(any_: Tensor, size: int) -> tuple[Tensor, Tensor]:
        a = any_.to(torch.uint8)
        first = a.argmax(-1)  # first True (0 when empty)
        last_excl = size - a.flip(-1).argmax(-1)
        return first, last_excl

    y1, y2 = span(rows, h)
    x1, x2 = span(cols, w)
    boxes = torch.stack([x1, y1, x2, y2], -1).to(prob.dtype if prob.is_floating_point() else torch.float32)
    full = torch.tensor([0, 0, w, h], dtype=boxes.dtype, device=boxes.device)
    return torch.where(nonempty[..., None], boxes, full), nonempty


def pooling_weights(
    logits: Tensor, mode: str = "soft", tau: float = 0.25, threshold: float = 0.5
) -> Tensor:
    """Per-pixel pooling weights of each region for the mask-based variants.

    Args:
        logits: [B,Q,H,W] mask logits M.
        mode: ``soft`` | ``sharpened`` | ``thresholded`` | ``box_normalised``.
        tau: temperature of ``sharpened``.
        threshold: foreground threshold on ``sigmoid(M)`` (``thresholded``, ``box_normalised``).

    Returns:
        [B,Q,H,W] weights in [0,1] (unnormalised; :func:`mask_pool` normalises), dtype of
        ``logits``.
    """
    prob = logits.sigmoid()
    if mode == "soft":
        return prob
    if mode == "sharpened":
        if tau <= 0:
            raise ValueError(f"model.region_head.pool_tau={tau}: must be > 0")
        return (logits / tau).sigmoid()
    fg = prob > threshold
    nonempty = fg.flatten(2).any(-1)[..., None, None]  # [B,Q,1,1]
    if mode == "thresholded":
        return torch.where(nonempty, fg.to(prob.dtype), prob)
    if mode == "box_normalised":
        boxes, _ = mask_boxes(prob, threshold)  # empty -> whole grid
        h, w = prob.shape[-2:]
        ys = torch.arange(h, device=prob.device, dtype=boxes.dtype)
        xs = torch.arange(w, device=prob.device, dtype=boxes.dtype)
        in_y = (ys >= boxes[..., 1:2]) & (ys < boxes[..., 3:4])  # [B,Q,H]
        in_x = (xs >= boxes[..., 0:1]) & (xs < boxes[..., 2:3])  # [B,Q,W]
        return prob * (in_y[..., :, None] & in_x[..., None, :]).to(prob.dtype)
    raise ValueError(f"model.region_head.pool_mode={mode!r}: use one of {POOL_MODES}")


def roi_pool(prob: Tensor, feats: Tensor, threshold: float = 0.5, roi_size: int = 7) -> Tensor:
    """RoIAlign box pooling of each region's box (``prob > threshold``; whole grid if empty).

    Args:
        prob: [B,Q,H,W] soft masks (only their boxes are used; no gradient flows to them).
        feats: [B,C,H',W'] or [1,C,H',W'] (broadcast) features.
        threshold: foreground threshold.
        roi_size: output bins per side, averaged.

    Returns:
        [B,Q,C] in fp32 (fp64 for fp64 features).
    """
    from torchvision.ops import roi_align

    b, q, h, w = prob.shape
    acc = _acc_dtype(feats)
    boxes, _ = mask_boxes(prob.detach(), threshold)
    scale = torch.tensor([feats.shape[-1] / w, feats.shape[-2] / h] * 2, device=prob.device)
    boxes = boxes.to(acc) * scale.to(acc)  # mask grid -> feature grid
    if feats.shape[0] == b:
        index = torch.arange(b, device=prob.device).repeat_interleave(q)
    elif feats.shape[0] == 1:
        index = torch.zeros(b * q, device=prob.device, dtype=torch.long)
    else:
        raise ValueError(f"feats batch {feats.shape[0]} does not match masks batch {b}")
    rois = torch.cat([index[:, None].to(acc), boxes.reshape(b * q, 4)], 1)  # [B*Q,5]
    with torch.autocast(device_type=feats.device.type, enabled=False):
        out = roi_align(feats.to(acc), rois, output_size=roi_size, spatial_scale=1.0,
                        sampling_ratio=2, aligned=True)  # [B*Q,C,S,S]
    return out.mean((-2, -1)).reshape(b, q, -1)


def region_pool(
    logits: Tensor,
    feats: Tensor,
    mode: str = "soft",
    tau: float = 0.25,
    threshold: float = 0.5,
    roi_size: int = 7,
    eps: float = 1e-6,
    chunk_size: int | None = None,
    prob: Tensor | None = None,
    prob_low: Tensor | None = None,
) -> Tensor:
    """Pool region vectors with one of ``POOL_MODES`` (see the module docstring).

    The one place that dispatches on the pooling mode (the region head calls it per source).

    Args:
        logits: [B,Q,H,W] mask logits M.
        feats: [B,C,H',W'] features (masks are resized to this grid).
        prob: ``sigmoid(logits)`` [B,Q,H,W] if the caller already has it (saves a sigmoid).
        prob_low: ``prob`` already resized to a coarser grid [B,Q,h,w]; ``soft`` uses it when
            that grid is the feature grid (the region head shares it with its attention mask).

    Returns:
        [B,Q,C] (fp32, or fp64 for fp64 inputs).
    """
    if prob is None:
        prob = logits.sigmoid()
    if mode == "roi_align":
        return roi_pool(prob, feats, threshold, roi_size)
    if mode == "soft":
        same_grid = prob_low is not None and prob_low.shape[-2:] == feats.shape[-2:]
        weights = prob_low if same_grid else prob
    else:
        weights = pooling_weights(logits, mode, tau, threshold)
    return mask_pool(weights, feats, eps=eps, chunk_size=chunk_size)
