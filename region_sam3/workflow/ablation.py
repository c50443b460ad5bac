"""Ablation results (CSV from scripts/aggregate_multirun.py or scripts/ablation_report.py):
mean ± std per setting and split."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def load_results(path: str | Path) -> list[dict[str, str]]:
    """Rows of an aggregated results CSV (`<override columns>, n, <metric>_mean, <metric>_std`)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"results CSV not found: {path}")
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def varying_settings(rows: Sequence[dict[str, str]]) -> list[str]:
    """Override columns whose value differs between rows (what the sweep varied). Both CSV
    writers put the override columns first and `n` right after them."""
    if not rows:
        return []
    columns = list(rows[0])
    overrides = columns[:columns.index("n")] if "n" in columns else columns
    return [c for c in overrides if len({r[c] for r in rows}) > 1]


def short_keys(settings: Sequence[str]) -> dict[str, str]:
    """{override key: its shortest dotted suffix that no other key of `settings` shares}:
    `model.region_head.num_iters` -> `num_iters`, but `model.optimizer.lr` and
    `model.teacher.lr` -> `optimizer.lr`, `teacher.lr`."""
    parts = {c: c.replace("/", ".").split(".") for c in settings}
    out = {}
    for c, segs in parts.items():
        for n in range(1, len(segs) + 1):
            suffix = segs[-n:]
            if all(o == c or other[-n:] != suffix for o, other in parts.items()):
                break
        out[c] = ".".join(suffix)
    return out


def setting_label(row: dict[str, str], settings: Sequence[str]) -> str:
    """`num_iters=2, baseline=lora`: the varied overrides of one row, each by its shortest
    unambiguous key suffix (`short_keys`)."""
    short = short_keys(settings)
    return ", ".join(f"{short[c]}={row[c]}" for c in settings if row[c]) or "all"


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
    labels = [setting_label(r, settings) for r in rows]
    ax.set_xticks(range(len(rows)), labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(f"{metric} (mean ± std over seeds)")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return ax


def plot_paired(rows: Sequence[dict[str, str]], metric: str, against: str = "reference",
                scale: float = 100.0, alpha: float = 0.05, ax=None):
    """Horizontal bars of the paired per-seed difference of `metric` (a full key, e.g.
    `test/ood_touching/miou/mIoU_topk`) from scripts/ablation_report.py's CSV: to the T=0
    reference (`against="reference"`) or to the best baseline (`"best_baseline"`), ± the std
    of the differences; `*` marks Holm-adjusted p < `alpha`. Rows without a test are left out."""
    import matplotlib.pyplot as plt

    mean_col, std_col, p_col = (
        (f"{metric}_diff_mean", f"{metric}_diff_std", f"{metric}_p_holm") if against == "reference"
        else (f"{metric}_vs_best_baseline_mean", None, f"{metric}_vs_best_baseline_p_holm"))
    if not rows or mean_col not in rows[0]:
        raise KeyError(f"no column {mean_col!r}: is this scripts/ablation_report.py's CSV?")
    settings = varying_settings(rows)
    kept = [r for r in rows if math.isfinite(_num(r.get(mean_col, "")))]
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 0.35 * len(kept) + 1))
    means = [_num(r[mean_col]) * scale for r in kept]
    stds = [0.0 if std_col is None or math.isnan(_num(r.get(std_col, ""))) else
            _num(r[std_col]) * scale for r in kept]
    ax.barh(range(len(kept)), means, xerr=stds, capsize=3, color="tab:blue")
    for i, r in enumerate(kept):
        if _num(r.get(p_col, "nan")) < alpha:
            ax.text(means[i], i, " *", va="center", fontsize=12)
    ax.set_yticks(range(len(kept)), [setting_label(r, settings) for r in kept], fontsize=8)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_xlabel(f"{metric} − {against.replace('_', ' ')} (×{scale:g}, paired by seed)")
    ax.grid(axis="x", alpha=0.3)
    return ax


def plot_paired_grid(rows: Sequence[dict[str, str]], metrics: Sequence[str],
                     against: str = "reference", ncols: int = 0, scale: float = 100.0) -> Figure:
    """One `plot_paired` panel per metric (full keys `test/<split>/<metric>`), laid out one
    column per split and one row per metric when every metric has that form (else `ncols`
    wide), sharing the setting axis; the figure back."""
    import matplotlib.pyplot as plt

    parts = [m.split("/", 2) for m in metrics]
    splits = list(dict.fromkeys(p[1] for p in parts if len(p) == 3))
    kinds = list(dict.fromkeys(p[2] for p in parts if len(p) == 3))
    stage = parts[0][0]
    grid = [[f"{stage}/{s}/{k}" for s in splits] for k in kinds]
    is_grid = (all(len(p) == 3 and p[0] == stage for p in parts)
               and sorted(m for line in grid for m in line) == sorted(metrics))
    if ncols or not is_grid:
        ncols = ncols or min(len(metrics), 5)
        grid = [list(metrics[i:i + ncols]) for i in range(0, len(metrics), ncols)]

    def tested(metric: str) -> list[int]:
        col = (f"{metric}_diff_mean" if against == "reference"
               else f"{metric}_vs_best_baseline_mean")
        return [k for k, r in enumerate(rows) if math.isfinite(_num(r.get(col, "")))]

    n_rows = max(len(tested(m)) for m in metrics) or 1
    fig, axes = plt.subplots(len(grid), max(map(len, grid)), squeeze=False,
                             figsize=(3.2 * max(map(len, grid)) + 2.0,
                                      (0.28 * n_rows + 0.9) * len(grid)))
    for i, line in enumerate(grid):
        for j in range(axes.shape[1]):
            ax = axes[i][j]
            if j >= len(line):
                ax.set_visible(False)
                continue
            plot_paired(rows, line[j], against, scale, ax=ax)
            ax.set_title(line[j].split("/", 1)[-1], fontsize=9)
            ax.set_xlabel(f"Δ ×{scale:g}", fontsize=8)
            if j and tested(line[j]) == tested(line[0]):  # same settings, same rows
                ax.tick_params(labelleft=False)
    fig.tight_layout()
    return fig
