"""The value train.py hands a sweeper is the tested checkpoint's, not the last validation's."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from region_sam3.reporting.run_outputs import optimized_metric


def _trainer(best: float | None, monitor: str = "val/mask/AP"):
    score = None if best is None else torch.tensor(best)
    return SimpleNamespace(checkpoint_callback=SimpleNamespace(best_model_score=score,
                                                               monitor=monitor))


def test_the_selected_checkpoints_score_wins_over_the_last_value():
    metrics = {"val/mask/AP": 0.16}  # last validation; the best one (kept, tested) was 0.17
    assert optimized_metric(metrics, "val/mask/AP", _trainer(0.17)) == pytest.approx(0.17)
    # a callback monitoring another metric says nothing about this one
    assert optimized_metric(metrics, "val/mask/AP", _trainer(0.9, "val/loss")) == 0.16
    # no checkpoint kept (no validation, fast_dev_run): the last value, or None without one
    assert optimized_metric(metrics, "val/mask/AP", _trainer(None)) == 0.16
    assert optimized_metric({}, "val/mask/AP", None) is None
    assert optimized_metric(metrics, "val/mask/AP", _trainer(math.nan)) is None
    assert optimized_metric(metrics, None, _trainer(0.17)) is None
