"""Before/after table of the closed loop: M^0 (plain SAM3) against M^T on the same prompts.

With per-iteration evaluation on (`model.evaluation.per_iteration`), every evaluation logs the
final masks under `<stage>/<metric>` and every iterate under `<stage>/iter{t}/<metric>`; `iter0`
is SAM3's own mask (T = 0) on exactly the same queries and scores, so the difference is the
region head's effect alone.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from region_sam3.outputs import STAGE_ITER_METRIC_RE as _ITER

# mIoU_topk (threshold-free) rather than mIoU: a weak base has no score above 0.5, so the
# thresholded mIoU reads 0 for every iterate.
GAIN_METRICS = ("mask/AP", "mask/AP50", "mask/AP_S", "mask/AR100", "boundary/AP", "miou/mIoU_topk")


def iteration_stages(metrics: Mapping[str, float]) -> list[str]:
    """Stages (`val`, `test`, `test/test_small`, ...) that logged per-iteration metrics."""
    stages = []
    for key in metrics:
        match = _ITER.match(key)
        if match and match["stage"] not in stages:
            stages.append(match["stage"])
    return stages


def iteration_gain_rows(metrics: Mapping[str, float], stage: str,
                        names: Sequence[str] = GAIN_METRICS) -> list[tuple[str, float, float]]:
    """[(metric, value at M^0, value at M^T)] for the metrics `stage` logged both ways."""
    rows = []
    for name in names:
        before, after = metrics.get(f"{stage}/iter0/{name}"), metrics.get(f"{stage}/{name}")
        if before is not None and after is not None:
            rows.append((name, float(before), float(after)))
    return rows


def _fmt(value: float) -> str:
    return "nan" if math.isnan(value) else f"{value:.4f}"


def format_iteration_gain(metrics: Mapping[str, float], num_iters: int | None = None,
                          names: Sequence[str] = GAIN_METRICS) -> str:
    """Markdown table: one row per (stage, metric) with M^0, M^T and the difference.

    Returns "" when no stage logged per-iteration metrics (e.g. no region head).
    """
    final = f"M^{num_iters}" if num_iters is not None else "M^T"
    lines = [f"| split | metric | M^0 (SAM3, T=0) | {final} (region head) | change |",
             "| --- | --- | ---: | ---: | ---: |"]
    for stage in iteration_stages(metrics):
        for name, before, after in iteration_gain_rows(metrics, stage, names):
            change = after - before
            sign = "+" if change >= 0 else ""
            lines.append(f"| {stage} | {name} | {_fmt(before)} | {_fmt(after)} | "
                         f"{sign}{_fmt(change)} |")
    return "\n".join(lines) if len(lines) > 2 else ""
