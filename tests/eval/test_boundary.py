"""Boundary band, Boundary IoU and Boundary AP on hand-computed cases."""

from __future__ import annotations

import numpy as np
import pycocotools.mask as mask_utils
import pytest
import torch
import torch.nn.functional as F

from region_sam3.eval import (
    BoundaryAPEvaluator,
    COCOMaskEvaluator,
    boundary_iou,
    boundary_width,
    mask_to_boundary,
    rle_boundaries,
)
from tests.eval.records import detections, ground_truth, rle


def square(size: int, y0: int, x0: int, side: int) -> torch.Tensor:
    m = torch.zeros(size, size, dtype=torch.bool)
    m[y0 : y0 + side, x0 : x0 + side] = True
    return m


def reference_boundary(mask: torch.Tensor, d: int) -> torch.Tensor:
    """d iterations of a 3x3 erosion with zero outside the image (reference recipe)."""
    x = mask.float()[None, None]
    for _ in range(d):
        x = -F.max_pool2d(-F.pad(x, (1, 1, 1, 1), value=0.0), 3, stride=1)
    return mask & ~x[0, 0].bool()


@pytest.mark.parametrize(
    ("h", "w", "d"),
    [(64, 64, 2), (224, 224, 6), (1008, 1008, 29), (10, 10, 1), (480, 640, 16)],
)
def test_band_width_follows_two_percent_of_diagonal(h, w, d):
    # 0.02 * diag: 1.81 -> 2, 6.34 -> 6, 28.5 -> 29, 0.28 -> clamped to 1, 0.02 * 800 = 16.
    assert boundary_width(h, w) == d


def test_band_of_square_has_expected_area():
    band = mask_to_boundary(square(64, 10, 10, 20))  # d = 2: 20^2 - 16^2
    assert band.sum().item() == 400 - 256
    assert not band[14:26, 14:26].any()  # interior is not boundary


def test_mask_cut_by_image_border_has_boundary_on_the_border():
    band = mask_to_boundary(square(64, 0, 0, 10))  # d = 2, eroded core rows/cols 2..7
    assert band.sum().item() == 100 - 36
    assert band[0, 5] and band[5, 0]


def test_band_matches_iterated_3x3_erosion_reference():
    g = torch.Generator().manual_seed(0)
    masks = F.max_pool2d((torch.rand(3, 1, 64, 64, generator=g) > 0.97).float(), 9, 1, 4)[:, 0]
    masks = masks.bool()
    got = mask_to_boundary(masks)
    for i in range(3):
        assert torch.equal(got[i], reference_boundary(masks[i], boundary_width(64, 64)))


def test_boundary_iou_identical_is_one():
    m = square(64, 5, 9, 30)
    assert boundary_iou(m, m) == 1.0


def test_boundary_iou_of_shifted_square_hand_computed():
    # 20x20 squares, d = 2, shifted by one column. Bands have 144 px each. Top/bottom 2-px
    # strips (4 rows) overlap on 19 columns: 76; the 16 middle rows overlap on 2 columns: 32.
    # inter = 108, union = 288 - 108 = 180 -> 0.6.
    a, b = square(64, 10, 10, 20), square(64, 10, 11, 20)
    assert boundary_iou(a, b) == pytest.approx(108 / 180)
    # Two columns: strips overlap on 18 columns (72), middle rows not at all -> 72 / 216.
    assert boundary_iou(a, square(64, 10, 12, 20)) == pytest.approx(72 / 216)


def _query(pred_mask: torch.Tensor, gt_mask: torch.Tensor):
    return ([detections(1, [pred_mask.numpy()], [0.9], [1])],
            [ground_truth(1, [gt_mask.numpy()], [1])])


def test_boundary_ap_perfect_is_one():
    m = square(64, 10, 10, 20)
    ev = BoundaryAPEvaluator()
    ev.process(*_query(m, m))
    assert ev.evaluate()["boundary/AP"] == pytest.approx(1.0)


def test_boundary_ap_is_stricter_than_mask_ap():
    # Shift by 2 px: mask IoU = 360/440 = 0.818 (matched at IoU thresholds 0.50..0.80, 7 of
    # 10 -> mask AP 0.7); boundary IoU = 1/3 < 0.5 -> min(mask, boundary) never matches.
    gt, pr = square(64, 10, 10, 20), square(64, 10, 12, 20)
    mask_ev, bnd_ev = COCOMaskEvaluator(), BoundaryAPEvaluator()
    for ev in (mask_ev, bnd_ev):
        ev.process(*_query(pr, gt))
    assert mask_ev.evaluate()["mask/AP"] == pytest.approx(0.7)
    assert bnd_ev.evaluate()["boundary/AP"] == pytest.approx(0.0)


def test_boundary_ap_ignores_detections_on_crowd_regions():
    obj, crowd = square(64, 0, 0, 20).numpy(), square(64, 30, 30, 30).numpy()
    ev = BoundaryAPEvaluator()
    ev.process([detections(1, [crowd, obj], [0.95, 0.9], [1, 1])],
               [ground_truth(1, [obj, crowd], [1, 1], iscrowd=[0, 1])])
    assert ev.evaluate()["boundary/AP"] == pytest.approx(1.0)


def test_rle_boundaries_equal_dense_band():
    m = square(48, 5, 7, 30)
    band = mask_utils.decode(rle_boundaries([rle(m.numpy())])[0]).astype(bool)
    assert np.array_equal(band, mask_to_boundary(m).numpy())
