"""scripts/pooling_saturation.py: the soft-vs-variant weight distances on known masks."""

from __future__ import annotations

import pytest
import torch
from helpers import load_script

saturation = load_script("pooling_saturation")


def test_saturated_masks_give_the_same_weights_for_every_variant():
    logits = torch.full((1, 2, 8, 8), -30.0)
    logits[0, 0, 2:5, 2:5] = 30.0  # a square: box == mask, sigmoid 0 or 1 everywhere
    logits[0, 1, 0:3, 4:8] = 30.0
    d = saturation.weight_divergence(logits)
    assert d["uncertain"] == 0.0 and d["soft_outside_fg"] == pytest.approx(0.0, abs=1e-9)
    for mode in saturation.COMPARED:
        assert d[f"tv_{mode}"] == pytest.approx(0.0, abs=1e-9)


def test_a_soft_tail_separates_soft_from_thresholded():
    # one region: 4 pixels at p=0.9 (foreground), 12 at p=0.1 (tail) on a 4x4 grid
    p = torch.full((1, 1, 4, 4), 0.1)
    p[0, 0, :2, :2] = 0.9
    d = saturation.weight_divergence(p.logit())
    soft_tail = 12 * 0.1 / (12 * 0.1 + 4 * 0.9)  # soft mass outside the foreground
    assert d["uncertain"] == 1.0
    assert d["soft_outside_fg"] == pytest.approx(soft_tail)
    assert d["tv_thresholded"] == pytest.approx(soft_tail)  # thresholded puts it all inside
    assert d["tv_box_normalised"] == pytest.approx(soft_tail)  # the box is the 2x2 square
    assert 0.0 < d["tv_sharpened"] < soft_tail  # sharpening shrinks the tail, keeps some


def test_the_region_head_looks_region_pool_up_at_call_time():
    # measure() swaps region_head.region_pool for a spy: that only sees the head's calls while
    # the head reads the module global on every call (a local alias would bypass the spy)
    from region_sam3.models import region_head

    assert saturation._REGION_POOL is region_head.region_pool
    def global_names(code) -> set[str]:  # comprehensions are nested code objects
        names = set(code.co_names)
        for const in code.co_consts:
            if hasattr(const, "co_names"):
                names |= global_names(const)
        return names

    assert "region_pool" in global_names(region_head.RegionHead.forward.__code__)
