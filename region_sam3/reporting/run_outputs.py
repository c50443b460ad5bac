"""What a run writes at its end (`region_sam3.tasks`): metrics JSON, report.md, the console
summary, the M^0 vs M^T table, and the value a sweeper optimises."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger("region_sam3.tasks")  # the tasks' logger: messages read as before


def float_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """Logged metrics (tensors or numbers) as plain floats."""
    out = {}
    for key, value in metrics.items():
        value = float(value.item() if torch.is_tensor(value) else value)
        out[key] = value
    return out


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """`payload` as sorted, indented JSON at `path` (folders created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, sort_keys=True))
    log.info("metrics written to %s", path)


def write_report(metrics_path: Path, metrics: dict[str, float], model: Any, datamodule: Any,
                 **meta: str) -> None:
    """`report.md` next to the metrics JSON (tables, curves, overlays): region_sam3.reporting."""
    from region_sam3.reporting import write_run_report

    splits = list(getattr(datamodule, "test_splits", None) or ["test"])
    report = write_run_report(metrics_path, metrics, splits, net=getattr(model, "net", None),
                              datamodule=datamodule, meta=meta)
    log_summary(metrics, splits, metrics_path, report)


def log_summary(metrics: dict[str, float], splits: list[str], metrics_path: Path,
                report: Path) -> None:
    """The compact per-split table (AP ... mIoU top-K, M^0 vs M^T) at the end of the console;
    every other metric is in the JSON and report.md. Called on rank 0 only."""
    from region_sam3.reporting import summary_tables

    tables = summary_tables(metrics, splits)
    if any(key.startswith("val/mask/") for key in metrics):
        # The last validation (the selected checkpoint's split) beside the test splits: M^0 vs
        # M^T on val and test in one place (issue 22 item 1), not a second table below.
        tables = summary_tables(metrics, ["val"], stage="val") + "\n" + tables
    log.info("Test summary (all metrics: %s, %s):\n%s", metrics_path, report, tables)


def report_iteration_gain(metrics: dict[str, float], model: Any,
                          output_dir: Path, echo: bool = True) -> None:
    """Save (and with `echo`, print) the M^0 vs M^T table (val: last validation; test: tested
    checkpoint). A run that tests prints the same rows in its summary, so it passes echo=False."""
    from region_sam3.utils.iteration_gain import format_iteration_gain

    head = getattr(getattr(getattr(model, "net", None), "segmentation_head", None),
                   "region_head", None)
    table = format_iteration_gain(metrics, getattr(head, "num_iters", None))
    if table:
        (output_dir / "iteration_gain.md").write_text(table + "\n")
        if echo:
            print(f"\nClosed loop, before (M^0 = SAM3) / after (M^T):\n{table}\n", flush=True)


def optimized_metric(metrics: dict[str, float], name: str | None,
                     trainer: Any = None) -> float | None:
    """The value a sweeper optimises: that of the checkpoint the run keeps and tests.

    When the trainer's checkpoint callback monitors `name`, its best score (the selected
    checkpoint's); otherwise `metrics[name]`, the last logged value. A sweep that maximised the
    last validation would rank trials by a checkpoint it then does not use. None (a failed
    trial) when the metric was never logged or is NaN; a clear error names the metric.
    """
    if not name:
        return None
    callback = getattr(trainer, "checkpoint_callback", None)
    best = getattr(callback, "best_model_score", None)
    if best is not None and getattr(callback, "monitor", None) == name:
        value = float(best)
        return None if math.isnan(value) else value
    if name not in metrics:
        # Raising here would discard a finished run in a sweep; the run's artefacts are saved.
        log.error("optimized_metric=%r was not logged (no validation ran?); available: %s",
                  name, sorted(metrics)[:20])
        return None
    value = metrics[name]
    return None if math.isnan(value) else value
