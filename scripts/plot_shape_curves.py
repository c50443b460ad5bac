#!/usr/bin/env python
"""Shape-learning curves of backbone candidates (stage-1 runs): table + plot.

Each run is a `python train.py experiment=pretrain_tiny_stage1 model/sam3=<candidate>` folder;
its `csv/metrics.csv` holds the object-level probe every validation
(`region_sam3.eval.object_probe`). The table gives, per candidate, the best val shape accuracy
on objects >= 400 px (and its step), the first step it reached the target, and the other probe
figures at that step; the plot shows shape (all / large objects, finest and coarsest neck level)
and colour accuracy against training scenes.

    python scripts/plot_shape_curves.py --run "patch 14" ~/runs/shape_curves/tiny/logs/... \
        --run "patch 7" <run dir> --batch 8 --target 0.9 --out results/shape_curves
"""

from __future__ import annotations

import argparse
import csv
import math
from collections.abc import Sequence
from pathlib import Path

#: (csv key, label) of the plotted / tabulated probe figures.
KEYS = (("val/large/shape_acc", "shape, >= 400 px"), ("val/shape_acc", "shape, all"),
        ("val/coarse/large/shape_acc", "shape, >= 400 px, 16² level"),
        ("val/colour_acc", "colour, all"))
HEADLINE = KEYS[0][0]


def read_curve(run_dirs: str | Path) -> list[dict[str, float]]:
    """Validation rows of a run: [{"step": s, key: value, ...}] in step order.

    ``run_dirs`` may join several folders with commas: a run and its resumptions (each resume
    opens a new folder); rows of a later folder replace those of the same step.
    """
    by_step: dict[float, dict[str, float]] = {}
    for run_dir in str(run_dirs).split(","):
        for row in _read_one(Path(run_dir).expanduser()):
            by_step[row["step"]] = row
    return [by_step[s] for s in sorted(by_step)]


def _read_one(run_dir: Path) -> list[dict[str, float]]:
    path = run_dir / "csv" / "metrics.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (a stage-1 run with logger=csv)")
    rows = []
    with path.open() as handle:
        for row in csv.DictReader(handle):
            if row.get(HEADLINE):
                rows.append({"step": float(row["step"]),
                             **{k: float(row[k]) if row.get(k) else math.nan for k, _ in KEYS}})
    if not rows:
        raise ValueError(f"{path}: no validation rows with {HEADLINE}")
    return sorted(rows, key=lambda r: r["step"])


def summary_rows(curves: dict[str, list[dict[str, float]]], target: float) -> list[list[str]]:
    """One table row per candidate (see the module docstring)."""
    out = []
    for label, rows in curves.items():
        best = max(rows, key=lambda r: -1 if math.isnan(r[HEADLINE]) else r[HEADLINE])
        reached = next((r for r in rows if r[HEADLINE] >= target), None)
        out.append([label, f"{int(rows[-1]['step']) + 1}", f"{best[HEADLINE]:.3f}",
                    f"{int(best['step']) + 1}",
                    f"{int(reached['step']) + 1}" if reached else "not reached",
                    *(f"{best[k]:.3f}" for k, _ in KEYS[1:])])
    return out


def markdown_table(rows: list[list[str]], target: float) -> str:
    header = ["candidate", "steps", f"best {KEYS[0][1]}", "at step", f"first step >= {target}",
              *(label for _, label in KEYS[1:])]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def plot(curves: dict[str, list[dict[str, float]]], batch: int, target: float, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(KEYS), figsize=(4.2 * len(KEYS), 3.8), sharey=True)
    for ax, (key, label) in zip(axes, KEYS):
        for name, rows in curves.items():
            ax.plot([(r["step"] + 1) * batch for r in rows], [r[key] for r in rows],
                    marker="o", ms=3, label=name)
        if key == HEADLINE:
            ax.axhline(target, color="k", ls="--", lw=0.8, label=f"target {target}")
        ax.set(title=label, xlabel="training scenes (fresh)", ylim=(0, 1))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("val object-level accuracy")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", nargs=2, action="append", required=True, metavar=("LABEL", "RUN_DIRS"),
                   help="RUN_DIRS: a stage-1 run folder, or several joined by commas (resumes)")
    p.add_argument("--batch", type=int, default=8, help="images per step (x axis in scenes)")
    p.add_argument("--target", type=float, default=0.9)
    p.add_argument("--out", type=Path, default=Path("results/shape_curves"),
                   help="writes OUT.png and OUT.md")
    args = p.parse_args(argv)
    curves = {label: read_curve(run) for label, run in args.run}
    table = markdown_table(summary_rows(curves, args.target), args.target)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text(table + "\n")
    print(table)
    print(f"wrote {plot(curves, args.batch, args.target, args.out.with_suffix('.png'))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
