"""The M^0 vs M^T table printed at the end of the main job."""

from __future__ import annotations

from region_sam3.utils.iteration_gain import (
    format_iteration_gain,
    iteration_gain_rows,
    iteration_stages,
)

METRICS = {
    "val/mask/AP50": 0.30, "val/iter0/mask/AP50": 0.25, "val/iter1/mask/AP50": 0.28,
    "val/miou/mIoU_topk": 0.40, "val/iter0/miou/mIoU_topk": 0.45,
    "test/test_small/mask/AP50": 0.1, "test/test_small/iter0/mask/AP50": float("nan"),
    "train/loss": 1.0, "val/mask/AP": 0.2,  # no iter0 counterpart: not in the table
}


def test_stages_and_rows_pair_iter0_with_the_final_masks():
    assert iteration_stages(METRICS) == ["val", "test/test_small"]
    assert iteration_gain_rows(METRICS, "val") == [("mask/AP50", 0.25, 0.30),
                                                  ("miou/mIoU_topk", 0.45, 0.40)]


def test_table_shows_signed_changes_and_nan():
    table = format_iteration_gain(METRICS, num_iters=2)
    lines = table.splitlines()
    assert "M^2 (region head)" in lines[0]
    assert "| val | mask/AP50 | 0.2500 | 0.3000 | +0.0500 |" in lines
    assert "| val | miou/mIoU_topk | 0.4500 | 0.4000 | -0.0500 |" in lines
    assert "| test/test_small | mask/AP50 | nan | 0.1000 | nan |" in lines
    assert format_iteration_gain({"val/mask/AP50": 0.3}) == ""
