"""Markdown / JSON / PNG report helpers."""

from __future__ import annotations

import json

from region_sam3.eval import per_iteration_markdown, write_report
from region_sam3.eval.report import metrics_to_markdown, split_per_iteration

METRICS = {
    "iter0/mask/AP": 0.25,
    "iter1/mask/AP": 0.5,
    "iter2/mask/AP": 0.625,
    "iter0/miou/mIoU": 0.4,
    "iter2/miou/mIoU": 0.7,
    "distill/cosine": float("nan"),
}


def test_split_and_tables():
    per = split_per_iteration(METRICS)
    assert per["mask/AP"] == {0: 0.25, 1: 0.5, 2: 0.625}
    md = per_iteration_markdown(METRICS, digits=3)
    assert "| metric | t=0 | t=1 | t=2 |" in md
    assert "| miou/mIoU | 0.400 |  | 0.700 |" in md
    assert "| distill/cosine | n/a |" in metrics_to_markdown(METRICS)


def test_write_report_files(tmp_path):
    paths = write_report(METRICS, tmp_path, name="val")
    data = json.loads(paths["json"].read_text())
    assert data["iter2/mask/AP"] == 0.625 and data["distill/cosine"] is None
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "t=2" in paths["md"].read_text()
