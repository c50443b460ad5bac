"""MetricsPlotCallback: the change-vs-T=0 panel of metrics.png and its numbers."""

from __future__ import annotations

import math
from types import SimpleNamespace

import torch

from region_sam3.utils.callbacks import MetricsPlotCallback


def _trainer(step: int, metrics: dict[str, float]) -> SimpleNamespace:
    return SimpleNamespace(sanity_checking=False, is_global_zero=True, current_epoch=step // 10,
                           global_step=step,
                           callback_metrics={k: torch.tensor(v) for k, v in metrics.items()})


def test_changes_against_the_iter0_reference(tmp_path):
    cb = MetricsPlotCallback(str(tmp_path), keys=(
        "val/mask/AP50", "val/iter0/mask/AP50", "val/miou/mIoU_topk", "val/iter0/miou/mIoU_topk",
        "val/mask/AP"))                                         # AP has no reference logged
    cb.on_validation_end(_trainer(10, {"val/mask/AP50": 0.30, "val/iter0/mask/AP50": 0.25,
                                       "val/miou/mIoU_topk": 0.5, "val/mask/AP": 0.1}), None)
    cb.on_validation_end(_trainer(20, {"val/mask/AP50": 0.20, "val/iter0/mask/AP50": 0.25,
                                       "val/miou/mIoU_topk": 0.6,
                                       "val/iter0/miou/mIoU_topk": 0.55}), None)
    changes = cb.reference_changes()
    assert set(changes) == {"val/mask/AP50", "val/miou/mIoU_topk"}
    assert [round(d, 6) for d in changes["val/mask/AP50"]] == [0.05, -0.05]
    first, second = changes["val/miou/mIoU_topk"]
    assert math.isnan(first) and round(second, 6) == 0.05    # reference missing at step 10
    assert (tmp_path / "metrics.png").read_bytes()[:4] == b"\x89PNG"


def test_no_reference_no_change_panel(tmp_path):
    cb = MetricsPlotCallback(str(tmp_path), keys=("val/mask/AP",))
    cb.on_validation_end(_trainer(5, {"val/mask/AP": 0.1}), None)
    assert cb.reference_changes() == {}
    assert (tmp_path / "metrics.png").is_file()
