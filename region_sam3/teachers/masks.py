"""Mask handling shared by all TextRegion teacher families.

Everything here is pure tensor code (no model), so it can be unit-tested on
constructed examples.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def masks_to_grid(
    masks: Tensor,
    image_size: tuple[int, int],
    padded_size: tuple[int, int],
    grid: tuple[int, int],
) -> Tensor:
    """Resize soft masks onto the teacher's patch grid.

    Args:
        masks: ``[R, h, w]`` soft (or boolean) masks covering the whole input image.
        image_size: ``(H, W)`` of the image the masks describe (after any resize the
            teacher applied to the image).
        padded_size: ``(Hp, Wp)`` >= ``(H, W)``; the image was zero-padded at the
            bottom/right to this size (tiling). Equal to ``image_size`` when not tiling.
        grid: ``(gh, gw)`` patch grid of the padded image.

    Returns:
        ``[R, gh * gw]`` float weights in ``[0, 1]``: the fraction of each patch covered
        by the mask (area interpolation, so a patch half inside a binary mask gets 0.5).
    """
    if masks.shape[0] == 0:
        return masks.new_zeros((0, grid[0] * grid[1]), dtype=torch.float32)
    m = masks.float().clamp(0, 1)[:, None]
    if tuple(m.shape[-2:]) != tuple(image_size):
        # Masks at another resolution than the (resized) image: bring them to image
        # resolution first so padding below is in the right units.
        m = F.interpolate(m, size=image_size, mode="bilinear", align_corners=False)
    pad_h, pad_w = padded_size[0] - image_size[0], padded_size[1] - image_size[1]
    if pad_h or pad_w:
        m = F.pad(m, (0, pad_w, 0, pad_h))
    m = F.interpolate(m, size=grid, mode="area")
    return m.flatten(1).clamp(0, 1)


def global_patch_removal_keep(features: Tensor, masks: Tensor, threshold: float = 0.07) -> Tensor:
    """TextRegion's global patch removal: which patches to keep.

    For each patch p (binary membership ``B[r, p] = masks[r, p] > 0``, empty masks
    ignored) with cosine patch similarity ``S = f f^T``:

    * ``avg[p, r] = sum_q S[p, q] B[r, q] / |B[r]|`` (mean similarity of p to region r),
    * ``inside[p] = sum_r avg[p, r] B[r, p] / (sum_r B[r, p] + 1e-9)``,
    * ``outside[p] = sum_r avg[p, r] (1 - B[r, p]) / (sum_r (1 - B[r, p]) + 1e-9)``,
    * keep p iff ``inside[p] - outside[p] >= threshold``.

    A "global" patch (e.g. a register-like token that is similar to everything) is about
    as similar to foreign regions as to its own, so it is dropped from every region.

    Args:
        features: ``[P, C]`` per-patch features (not necessarily normalised).
        masks: ``[R, P]`` mask weights on the patch grid.
        threshold: minimum in-minus-out similarity to keep a patch.

    Returns:
        ``[P]`` bool, True = keep. All True when there is no non-empty mask.

    Empty masks are masked out of the sums (weight 0) rather than dropped by boolean
    indexing, so this reads nothing back from the device (no host sync).
    """
    binary = (masks > 0).float()  # [R, P]
    nonempty = binary.amax(dim=1)  # [R] 1.0 for a non-empty mask
    f = F.normalize(features.float(), dim=-1)
    sim = f @ f.T  # [P, P]
    avg = (sim @ binary.T) / binary.sum(dim=1).clamp_min(1.0)  # [P, R] (0 for an empty mask)
    outside_w = (1 - binary.T) * nonempty  # [P, R]: non-empty masks that do not contain p
    inside = (avg * binary.T).sum(dim=1) / (binary.sum(dim=0) + 1e-9)
    outside = (avg * outside_w).sum(dim=1) / (outside_w.sum(dim=1) + 1e-9)
    keep = (inside - outside) >= threshold
    return keep | (nonempty.sum() == 0)


def pool_weights(masks: Tensor, mask_mode: str, normalize: bool, eps: float = 1e-6) -> Tensor:
    """Turn patch-grid masks ``[R, P]`` into pooling weights ``[R, P]``.

    ``mask_mode="binary"`` uses ``mask > 0`` (what constant-key attention with a boolean
    attention mask computes); ``"soft"`` keeps the fractional coverage. With
    ``normalize=True`` each row sums to 1 (masked mean); an empty row stays all-zero
    (no NaN) and yields the head's response to a zero vector.
    """
    if mask_mode == "binary":
        w = (masks > 0).float()
    elif mask_mode == "soft":
        w = masks.float()
    else:
        raise ValueError(f"mask_mode must be 'soft' or 'binary', got {mask_mode!r}")
    if normalize:
        w = w / w.sum(dim=1, keepdim=True).clamp_min(eps)
    return w
