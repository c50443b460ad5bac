#!/usr/bin/env python
"""Plot tiny-base pretraining curves against training views (images seen) in one figure.

Sources: the shipped base's record (`region_sam3/assets/sam3_tiny_synthetic.json`,
`training_curve`) and any number of run directories (their `csv/metrics.csv`). Runs have
different batch sizes and may continue another run, so the x axis is views = step × batch +
offset. Left panel: training loss (per-epoch mean from the record, 100-step window means from a
run); right panel: validation mask AP50.

    python scripts/plot_pretrain_curves.py --record region_sam3/assets/sam3_tiny_synthetic.json \
        --run "attempt 1 (scratch)" logs/pretrain_tiny/runs/<run> 4 0 \
        --run "attempt 2 (continue)" logs/pretrain_tiny_ft/runs/<run> 8 30000 \
        --out results/pretrain_tiny_curves.png
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path

Curve = dict[str, list[tuple[float, float]]]  # {"loss": [(views, value)], "ap50": [...]}


def record_curve(record: Path, batch_size: int) -> Curve:
    """Curves of the exported base's `training_curve` (per epoch: step, loss, val metrics)."""
    entries = json.loads(record.read_text()).get("training_curve")
    if not entries:
        raise ValueError(f"{record}: no 'training_curve' (export with --run-dir)")
    loss = [(e["step"] * batch_size, e["train/loss_epoch"]) for e in entries
            if "train/loss_epoch" in e]
    ap50 = [(e["step"] * batch_size, e["val/mask/AP50"]) for e in entries if "val/mask/AP50" in e]
    return {"loss": loss, "ap50": ap50}


def run_curve(run_dir: Path, batch_size: int, offset: int, window: int = 100) -> Curve:
    """Curves of a run's `csv/metrics.csv`: `train/loss_step` means per `window` steps and every
    finite `val/mask/AP50`, at views = step × batch_size + offset."""
    path = run_dir / "csv" / "metrics.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (run with logger=csv)")
    sums: dict[int, list[float]] = {}
    ap50: list[tuple[float, float]] = []
    with path.open() as handle:
        for row in csv.DictReader(handle):
            if not row.get("step"):
                continue
            step = int(row["step"])
            if row.get("train/loss_step"):
                sums.setdefault(step // window, []).append(float(row["train/loss_step"]))
            value = float(row["val/mask/AP50"]) if row.get("val/mask/AP50") else math.nan
            if math.isfinite(value):
                ap50.append((step * batch_size + offset, value))
    loss = [((k + 0.5) * window * batch_size + offset, sum(v) / len(v))
            for k, v in sorted(sums.items())]
    return {"loss": loss, "ap50": ap50}


def plot(curves: dict[str, Curve], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_ap) = plt.subplots(1, 2, figsize=(11, 4))
    for label, curve in curves.items():
        for ax, key in ((ax_loss, "loss"), (ax_ap, "ap50")):
            if curve[key]:
                xs, ys = zip(*curve[key])
                ax.plot(xs, ys, marker="o" if key == "ap50" else None, ms=4, label=label)
    ax_loss.set(xlabel="training views (images)", ylabel="training loss", title="training loss")
    ax_ap.set(xlabel="training views (images)", ylabel="val mask AP50", title="val mask AP50")
    for ax in (ax_loss, ax_ap):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--record", type=Path, help="exported base record with training_curve")
    p.add_argument("--record-batch", type=int, default=8, help="batch size of the record's run")
    p.add_argument("--run", nargs=4, action="append", default=[],
                   metavar=("LABEL", "RUN_DIR", "BATCH", "OFFSET_VIEWS"))
    p.add_argument("--out", type=Path, default=Path("results/pretrain_tiny_curves.png"))
    args = p.parse_args(argv)
    curves: dict[str, Curve] = {}
    if args.record:
        curves["shipped base"] = record_curve(args.record, args.record_batch)
    for label, run_dir, batch, offset in args.run:
        curves[label] = run_curve(Path(run_dir), int(batch), int(offset))
    if not curves:
        p.error("nothing to plot: give --record and/or --run")
    print(f"wrote {plot(curves, args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
