"""workflow.refinement: the helped / hurt counts and the example scenes of refinement_analysis."""

from __future__ import annotations

import math

import pytest
import torch

from region_sam3.reporting.overlays import Sample
from region_sam3.workflow.refinement import (
    InstanceChange,
    best_iou,
    extreme_samples,
    summarize_changes,
)


def _rows() -> list[InstanceChange]:
    # (image, instance, IoU t=0, IoU t=T): image 1 gains +0.3 and +0.1, image 2 loses -0.2,
    # image 3 moves +0.01 (within eps), image 4 loses -0.4
    spec = [(1, 0, 0.2, 0.5), (1, 1, 0.5, 0.6), (2, 0, 0.7, 0.5), (3, 0, 0.4, 0.41),
            (4, 0, 0.9, 0.5)]
    return [InstanceChange(i, "red circle", k, a, b) for i, k, a, b in spec]


def test_summary_counts_changes_beyond_eps():
    s = summarize_changes(_rows(), eps=0.05)
    assert (s.n, s.helped, s.hurt, s.unchanged) == (5, 2, 2, 1)
    assert s.mean_delta == pytest.approx((0.3 + 0.1 - 0.2 + 0.01 - 0.4) / 5)
    empty = summarize_changes([], eps=0.05)
    assert empty.n == 0 and math.isnan(empty.mean_delta)


def test_extreme_samples_one_scene_per_image_ordered_by_change():
    samples = [Sample(torch.zeros(3, 4, 4, dtype=torch.uint8), "red circle", i) for i in (1, 2, 3, 4)]
    helped, hurt = extreme_samples(_rows(), samples, k=3)
    # image 1 once (its largest gain), image 3's +0.01 is a strict gain too
    assert [(s.image_id, round(r.delta, 2)) for s, r in helped] == [(1, 0.3), (3, 0.01)]
    assert [(s.image_id, round(r.delta, 2)) for s, r in hurt] == [(4, -0.4), (2, -0.2)]


def test_best_iou_of_each_ground_truth():
    gt = torch.zeros(2, 4, 4, dtype=torch.bool)
    gt[0, :2, :2] = True                       # 4 px
    gt[1, 2:, 2:] = True                       # 4 px
    masks = torch.zeros(1, 4, 4, dtype=torch.bool)
    masks[0, :2, :] = True                     # 8 px, covers gt 0 entirely
    assert best_iou(gt, masks).tolist() == [0.5, 0.0]
    assert best_iou(gt, masks[:0]).tolist() == [0.0, 0.0]


def test_changes_markdown_lists_only_strict_changes():
    from region_sam3.workflow.refinement import changes_markdown

    rows = [InstanceChange(1, "red circle", 0, 0.5, 0.5), InstanceChange(2, "red circle", 0, 0.2, 0.6)]
    text = changes_markdown(rows, k=5)
    helped, hurt = text.split("**Hurt most**")
    assert "+0.400" in helped and "| 1 |" not in helped  # the unchanged instance is not "helped"
    assert "none (no IoU went down)" in hurt


def test_outline_is_the_border_band_of_the_mask():
    import numpy as np

    from region_sam3.workflow.refinement import _outline

    mask = np.zeros((8, 8), bool)
    mask[1:7, 1:7] = True                      # 6x6 square
    edge = _outline(mask, width=1)
    assert edge.sum() == 6 * 6 - 4 * 4 and not edge[3, 3] and edge[1, 3]
    assert not (edge & ~mask).any()
