"""Export a pretrain_tiny checkpoint as the shipped tiny base and record its reference metrics.

    python scripts/export_tiny_base.py logs/pretrain_tiny/runs/<run>/checkpoints/last.ckpt \
        --run-dir logs/pretrain_tiny/runs/<run> --command "python train.py ..."

With `--run-dir`, the record also carries the run's final metrics (`metrics.json`) and its
training curve: per-epoch train loss joined with every validation (`csv/metrics.csv`).
"""

from __future__ import annotations

import argparse
import csv
import json
import tempfile
from pathlib import Path

from region_sam3.utils.tiny_base import (
    RECORD,
    WEIGHTS,
    evaluate_tiny_base,
    export_tiny_base,
    write_record,
)

CURVE_KEYS = ("val/mask/AP", "val/mask/AP50", "val/mask/AP_S", "val/miou/mIoU")


def training_curve(run_dir: Path) -> list[dict[str, float]]:
    """Per epoch (from the run's `csv/metrics.csv`): last step, `train/loss_epoch` and, where a
    validation ran, the validation metrics."""
    rows: dict[int, dict[str, float]] = {}
    metrics_csv = run_dir / "csv" / "metrics.csv"
    if not metrics_csv.is_file():
        raise FileNotFoundError(f"--run-dir {run_dir}: no csv/metrics.csv (was logger=csv used?)")
    with metrics_csv.open() as handle:
        for record in csv.DictReader(handle):
            values = {k: round(float(record[k]), 4) for k in ("train/loss_epoch", *CURVE_KEYS)
                      if record.get(k)}
            if values:
                row = rows.setdefault(int(float(record["epoch"])), {})
                row.update(values, step=int(float(record["step"])))
    return [{"epoch": epoch, **rows[epoch]} for epoch in sorted(rows)]


def remeasure(note: str) -> None:
    """Re-record the shipped base's reference metrics (e.g. after the evaluation protocol
    changed); weights, command, curve and training-run metrics stay as they were."""
    record = json.loads(RECORD.read_text())
    with tempfile.TemporaryDirectory() as tmp:
        metrics = evaluate_tiny_base(Path(tmp) / "data", Path(tmp) / "out")
    provenance = {k: v for k, v in record.items() if k not in ("metrics", "reference_overrides")}
    if note:
        provenance["note"] = f"{provenance.get('note', '')}\n{note}".strip()
    write_record(metrics, provenance)
    print(f"re-measured {RECORD}")
    print(json.dumps(metrics, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("checkpoint", type=Path, nargs="?",
                        help="pretrain_tiny Lightning checkpoint to export (omit with --remeasure)")
    parser.add_argument("--remeasure", action="store_true",
                        help="keep the shipped weights and their provenance; re-measure only the "
                             "reference metrics with the current evaluation code")
    parser.add_argument("--run-dir", type=Path, help="the training run (metrics.json, csv/, ...)")
    parser.add_argument("--command", default="python train.py experiment=pretrain_tiny")
    parser.add_argument("--note", default="", help="free text stored in the record")
    args = parser.parse_args()
    if args.remeasure:
        remeasure(args.note)
        return
    if args.checkpoint is None:
        parser.error("give a checkpoint to export, or --remeasure")
    path = export_tiny_base(args.checkpoint)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")
    with tempfile.TemporaryDirectory() as tmp:
        metrics = evaluate_tiny_base(Path(tmp) / "data", Path(tmp) / "out")
    run_metrics_file = args.run_dir / "metrics.json" if args.run_dir else None
    run_metrics = (json.loads(run_metrics_file.read_text())
                   if run_metrics_file and run_metrics_file.is_file() else {})
    write_record(metrics, {
        "command": args.command,
        "source_checkpoint": str(args.checkpoint),
        "training_run_metrics": {k: v for k, v in run_metrics.items()
                                 if k.startswith(("val/mask", "test/mask", "val/miou", "test/miou"))},
        "weights_file": WEIGHTS.name,
        **({"note": args.note} if args.note else {}),
        "training_curve": training_curve(args.run_dir) if args.run_dir else [],
    })
    print(f"wrote {RECORD}")
    print(json.dumps(metrics, indent=2))


if __name__ == "__main__":
    main()
