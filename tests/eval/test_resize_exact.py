"""The fast encode path (reused resize buffers, ...) is bit-identical to the plain reference:
full ``F.interpolate`` of every mask, ``> 0`` RLE, torch stability, scipy boundary band."""

from __future__ import annotations

import numpy as np
import pycocotools.mask as mask_utils
import pytest
import torch
import torch.nn.functional as F

from region_sam3.eval import BatchLayout, PostProcessor
from region_sam3.eval.bands import band_per_mask, boundary_width
from region_sam3.eval.masks import stability_score
from region_sam3.eval.resize import ResizeWorkspace, masks_to_original


def smooth(k: int, side: int, seed: int, scale: float = 4.0, shift: float = -1.5) -> torch.Tensor:
    """``[k, side, side]`` smooth random logits (blobs), plus all-negative / all-positive
    masks and masks touching the borders."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(k, 1, 5, 5, generator=g) * scale + shift
    x = F.interpolate(noise, size=(side, side), mode="bilinear", align_corners=False)[:, 0]
    x[0] = -5.0 - torch.rand(side, side, generator=g)  # all below -delta
    x[1] = 5.0 + torch.rand(side, side, generator=g)  # all above +delta
    x[2] = -3.0
    x[2, :, :2] = 3.0  # touches the left border only
    x[3] = -0.5  # between -delta and 0 everywhere
    return x


CASES = [  # (canvas, valid, orig)
    ((64, 64), (64, 64), (37, 53)),  # whole canvas, non-square original, downsampling
    ((64, 64), (64, 64), (150, 97)),  # upsampling
    ((64, 64), (64, 40), (120, 75)),  # padded canvas (content window narrower)
    ((64, 64), (48, 64), (30, 41)),
]


@pytest.mark.parametrize("canvas,valid,orig", CASES)
def test_workspace_resize_is_bit_identical_to_f_interpolate(canvas, valid, orig):
    ws = ResizeWorkspace()
    for k, seed in ((7, 0), (4, 1), (9, 2)):  # buffer grows, then is reused smaller
        x = smooth(k, 16, seed).to(torch.bfloat16)
        ref = masks_to_original(x, canvas, valid, orig)
        got = ws.resize(x, canvas, valid, orig)
        assert got.shape == ref.shape == (k, *orig)
        assert torch.equal(got, ref)


def reference(logits: torch.Tensor, canvas, valid, orig, delta: float, ratio: float):
    """Per mask: plain full resize, RLE of ``> 0``, stability, scipy band."""
    full = masks_to_original(logits, canvas, valid, orig)
    d = boundary_width(*orig, ratio)
    rles, bands = [], []
    for m in full.numpy():
        b = np.asfortranarray(m > 0).astype(np.uint8)
        rles.append(mask_utils.encode(b))
        bands.append(mask_utils.encode(np.asfortranarray(band_per_mask(b, d).astype(np.uint8))))
    for r in rles + bands:
        r["counts"] = r["counts"].decode("ascii")
    return rles, stability_score(full, delta).numpy(), bands


@pytest.mark.parametrize("canvas,valid,orig", CASES)
def test_post_processor_masks_equal_plain_full_resize_reference(canvas, valid, orig):
    k, side = 12, 16
    g = torch.Generator().manual_seed(5)
    out = {"pred_logits": torch.linspace(3, -3, k).reshape(1, k, 1),  # keeps query order
           "presence_logit_dec": torch.zeros(1, 1),
           "pred_boxes": torch.rand(1, k, 4, generator=g) * 0.5 + 0.25,
           "pred_masks": smooth(k, side, 7)[None].to(torch.bfloat16),
           "pred_masks_iter0": smooth(k, side, 8, scale=6.0, shift=0.0)[None]}
    lay = BatchLayout(torch.tensor([0]), torch.tensor([3]), [1], [orig], [valid], canvas)
    # Small chunks: several chunks per source, the last one shorter.
    post = PostProcessor(k, boundary_ratio=0.02, chunk_pixels=5 * orig[0] * orig[1])
    (dets,) = post(out, lay)
    for src, got in ((out["pred_masks"][0], dets), (out["pred_masks_iter0"][0], dets.view(0))):
        rles, stab, bands = reference(src, canvas, valid, orig, post.delta, 0.02)
        assert got.rles == rles
        assert got.boundaries == bands
        np.testing.assert_array_equal(got.stability, stab.astype("float32"))
    assert dets.stability[0] == 1.0 and dets.rles[0] == reference(
        torch.full((1, side, side), -9.0), canvas, valid, orig, 1.0, 0.02)[0][0]
