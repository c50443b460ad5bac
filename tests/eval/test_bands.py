"""Batched boundary bands (bit-packed host path and max-pool device path) equal the per-mask
scipy band and the reference recipe (iterated 3x3 erosion after a 1-pixel zero pad) exactly."""

from __future__ import annotations

import numpy as np
import pycocotools.mask as mask_utils
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage

from region_sam3.eval import rle_boundaries
from region_sam3.eval.bands import band_per_mask, bands_numpy, bands_torch, boundary_bands
from region_sam3.eval.boundary import boundary_width


def blob_stack(k: int, h: int, w: int, seed: int) -> np.ndarray:
    """``[k, h, w]`` uint8 blobs (thresholded smooth noise, as model masks look), plus an empty
    mask, a full one and one touching every border."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(k, 1, 6, 7, generator=g) * 3 - 1
    m = (F.interpolate(noise, size=(h, w), mode="bilinear", align_corners=False)[:, 0] > 0)
    m = m.numpy().astype(np.uint8)
    m[0] = 0
    m[1] = 1
    m[2, :, : w // 3] = 1
    m[2, : h // 2] = 1
    return m


def official_band(mask: np.ndarray, d: int) -> np.ndarray:
    """boundary-iou-api: pad 1 px of zeros, d iterations of a 3x3 erosion, mask minus eroded."""
    eroded = ndimage.binary_erosion(np.pad(mask, 1), np.ones((3, 3)), iterations=d)[1:-1, 1:-1]
    return (mask > 0) & ~eroded


# Widths around the 64-bit word size (word and bit shifts) and the official 2% of 640x480.
@pytest.mark.parametrize("d", [1, 2, 7, 16, 31, 32, 33, 63, 64, 65, 100])
@pytest.mark.parametrize(("h", "w"), [(48, 200), (130, 67), (64, 64)])
def test_batched_bands_equal_per_mask_band(h, w, d):
    masks = blob_stack(9, h, w, seed=d + h)
    ref = np.stack([band_per_mask(m, d) for m in masks])
    assert ref[3:].any()  # non-trivial bands
    assert np.array_equal(bands_numpy(masks, d).astype(bool), ref)
    assert np.array_equal(bands_torch(torch.from_numpy(masks).bool(), d).numpy(), ref)
    assert np.array_equal(boundary_bands(torch.from_numpy(masks).bool(), d).numpy(), ref)


@pytest.mark.parametrize(("h", "w"), [(37, 91), (80, 44)])
def test_batched_bands_equal_official_recipe(h, w):
    d = boundary_width(h, w)
    masks = blob_stack(6, h, w, seed=h)
    got = bands_numpy(masks, d).astype(bool)
    for m, b in zip(masks, got):
        assert np.array_equal(b, official_band(m, d))


def test_rle_boundaries_of_a_stack_equal_per_mask_bands():
    masks = blob_stack(7, 90, 61, seed=3)
    rles = [mask_utils.encode(np.asfortranarray(m)) for m in masks]
    d = boundary_width(90, 61)
    for r, m in zip(rle_boundaries(rles), masks):
        assert np.array_equal(mask_utils.decode(r).astype(bool), band_per_mask(m, d))


def test_empty_stack():
    assert bands_numpy(np.zeros((0, 5, 6), np.uint8), 2).shape == (0, 5, 6)
    assert bands_torch(torch.zeros(0, 5, 6, dtype=torch.bool), 2).shape == (0, 5, 6)


def test_post_processor_bands_equal_bands_of_its_rles():
    """``PostProcessor(boundary_ratio=...)`` makes, for the final masks and every iterate, the
    bands ``rle_boundaries`` makes from the RLEs; they survive ``select`` / ``view``."""
    from region_sam3.eval import BatchLayout, PostProcessor

    g = torch.Generator().manual_seed(0)
    b, q = 3, 6
    out = {"pred_logits": torch.randn(b, q, 1, generator=g),
           "presence_logit_dec": torch.randn(b, 1, generator=g),
           "pred_boxes": torch.rand(b, q, 4, generator=g) * 0.5 + 0.25,
           "pred_masks": torch.randn(b, q, 12, 12, generator=g) * 3,
           "pred_masks_iter0": torch.randn(b, q, 12, 12, generator=g) * 3}
    layout = BatchLayout(torch.tensor([0, 0, 1]), torch.tensor([1, 2, 1]), [5, 6],
                         [(70, 45), (33, 90)], [(48, 48), (48, 30)], (48, 48))
    for dets in PostProcessor(10, boundary_ratio=0.02, chunk_pixels=3 * 70 * 45)(out, layout):
        assert dets.boundary_ratio == 0.02 and len(dets) == (10 if dets.image_id == 5 else 6)
        assert dets.boundaries == rle_boundaries(dets.rles)
        it = dets.view(0)
        assert it.boundaries == rle_boundaries(it.rles) and it.rles != dets.rles
        sub = dets.select(np.array([4, 1]))
        assert sub.boundaries == [dets.boundaries[4], dets.boundaries[1]]
    assert PostProcessor(10)(out, layout)[0].boundaries is None
