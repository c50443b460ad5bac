"""Write `report.md` (+ curves and overlay PNGs) next to a run's metrics JSON.

Called by `train.py`'s test stage and by `eval.py` on rank 0 only. Rendering overlays runs the
model on `num_images` images per split (12 forward passes by default: seconds on a GPU at
official size); a failure there is logged and the report is written without them, so a plotting
problem never costs a finished run its report.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from region_sam3.reporting.markdown import plot_iteration_curves, render_report

log = logging.getLogger(__name__)


def report_path(metrics_path: str | Path) -> Path:
    """`metrics.json` -> `report.md`; `eval_crowded_metrics.json` -> `eval_crowded_report.md`."""
    metrics_path = Path(metrics_path)
    stem = metrics_path.stem
    stem = stem[: -len("metrics")] + "report" if stem.endswith("metrics") else stem + "_report"
    return metrics_path.with_name(stem + ".md")


def write_run_report(metrics_path: str | Path, metrics: Mapping[str, float],
                     splits: Sequence[str], *, net: Any = None, datamodule: Any = None,
                     title: str = "Evaluation report", meta: Mapping[str, str] | None = None,
                     num_images: int = 4, stage: str = "test") -> Path:
    """Write the report for `metrics` of `splits`; returns the path of the markdown file.

    Args:
        net: the evaluated `Sam3Image` (overlays are skipped without it or `datamodule`).
        datamodule: gives each split's images (`split_paths(split)`).
    """
    md_path = report_path(metrics_path)
    stem = md_path.stem
    images: dict[str, str] = {}
    curves = plot_iteration_curves(metrics, splits, md_path.with_name(f"{stem}_curves.png"), stage)
    if curves is not None:
        images["Metrics per refinement iteration"] = curves.name
    training_curve = md_path.with_name("metrics.png")
    if training_curve.is_file():
        images["Training curves"] = training_curve.name
    if net is not None and datamodule is not None and num_images > 0:
        try:
            grid = _overlays(net, datamodule, splits, num_images)
            grid_path = md_path.with_name(f"{stem}_overlays.png")
            grid.save(grid_path)
            images["Predictions (columns: M^0 … M^T)"] = grid_path.name
        except Exception:  # noqa: BLE001 - never lose the report to a drawing problem
            log.exception("overlay grid failed; report written without it")
    info = {"written": datetime.now().isoformat(timespec="seconds"),
            "splits": ", ".join(splits), **(meta or {})}
    md_path.write_text(render_report(metrics, splits, title=title, stage=stage, meta=info,
                                     images=images))
    log.info("report written to %s", md_path)
    return md_path


def _overlays(net: Any, datamodule: Any, splits: Sequence[str], num_images: int):
    from region_sam3.predict import Sam3Predictor
    from region_sam3.reporting.overlays import overlay_grid, split_samples, stack_vertically

    device = next(net.parameters()).device
    was_training = net.training
    predictor = Sam3Predictor(net, device=device)
    try:
        grids = [overlay_grid(predictor, split_samples(*datamodule.split_paths(s), num_images),
                              title=f"split: {s}") for s in splits]
    finally:
        net.train(was_training)
    return stack_vertically(grids)
