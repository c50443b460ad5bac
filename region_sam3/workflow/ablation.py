"""Ablation results (CSV from scripts/aggregate_multirun.py or scripts/ablation_report.py):
mean ± std per setting and split."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path


def load_results(path: str | Path) -> list[dict[str, str]]:
    """Rows of an aggregated results CSV (`<override columns>, n, <metric>_mean, <metric>_std`)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"results CSV not found: {path}")
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def varying_settings(rows: Sequence[dict[str, str]]) -> list[str]:
    """Override columns whose value differs between rows (what the sweep varied)."""
    if not rows:
        return []
    stats = {c for c in rows[0] if c.endswith(("_mean", "_std")) or c == "n"}
    return [c for c in rows[0] if c not in stats and len({r[c] for r in rows}) > 1]


def splits_of(rows: Sequence[dict[str, str]], metric: str, stage: str = "test") -> list[str]:
    """Splits with a `<stage>/<split>/<metric>_mean` column, in column order."""
    out = []
    for col in rows[0] if rows else []:
        if col.startswith(stage + "/") and col.endswith(f"/{metric}_mean"):
            out.append(col[len(stage) + 1: -len(f"/{metric}_mean")])
    return out


def _num(text: str) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan


def plot_mean_std(rows: Sequence[dict[str, str]], metric: str = "mask/AP50", stage: str = "test",
                  ax=None):
    """Error bars: one group per setting, one bar per split (std NaN for n=1 is drawn as 0)."""
    import matplotlib.pyplot as plt

    settings = varying_settings(rows)
    splits = splits_of(rows, metric, stage)
    if not splits:
        raise KeyError(f"no column {stage}/<split>/{metric}_mean in the results")
    if ax is None:
        _, ax = plt.subplots(figsize=(1.2 + 0.9 * len(rows) * len(splits) / 2, 3.2))
    width = 0.8 / len(splits)
    for j, split in enumerate(splits):
        means = [_num(r[f"{stage}/{split}/{metric}_mean"]) for r in rows]
        stds = [_num(r.get(f"{stage}/{split}/{metric}_std", "nan")) for r in rows]
        xs = [i + (j - (len(splits) - 1) / 2) * width for i in range(len(rows))]
        ax.bar(xs, means, width, yerr=[0 if math.isnan(s) else s for s in stds], capsize=3,
               label=split)
    labels = [", ".join(f"{c.split('.')[-1]}={r[c]}" for c in settings) or "all" for r in rows]
    ax.set_xticks(range(len(rows)), labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(f"{metric} (mean ± std over seeds)")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return ax
