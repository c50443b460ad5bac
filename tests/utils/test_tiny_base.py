"""The shipped tiny SAM3 base loads strictly and reproduces its recorded metrics."""

from __future__ import annotations

import json

import pytest
import torch

from region_sam3.models.checkpoint import read_checkpoint
from region_sam3.utils.tiny_base import RECORD, REFERENCE_OVERRIDES, WEIGHTS, evaluate_tiny_base


def test_shipped_weights_are_small_official_format_and_load_strictly():
    assert WEIGHTS.is_file(), "run scripts/export_tiny_base.py to create the shipped base"
    assert WEIGHTS.stat().st_size <= 10 * 1024 * 1024
    state = read_checkpoint(WEIGHTS)
    assert all(k.startswith("detector.") for k in state)
    from helpers import compose_sam3
    from hydra.utils import instantiate

    model = instantiate(compose_sam3("tiny_base", ["strict=true"]))  # the shipped architecture
    own = model.state_dict()
    for key, value in state.items():
        assert torch.equal(own[key.removeprefix("detector.")], value.to(own[key.removeprefix("detector.")].dtype))


@pytest.mark.slow
def test_shipped_base_reproduces_recorded_metrics(tmp_path):
    record = json.loads(RECORD.read_text())
    assert record["reference_overrides"] == REFERENCE_OVERRIDES
    metrics = evaluate_tiny_base(tmp_path / "data", tmp_path / "out")
    for key, expected in record["metrics"].items():
        assert metrics[key] == pytest.approx(expected, abs=1e-4, nan_ok=True), key
