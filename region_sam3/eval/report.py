"""Metrics dict -> markdown table, JSON file, and per-iteration curves (PNG)."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path

from region_sam3.outputs import ITER_METRIC_RE as ITER_RE


def _fmt(v: float, digits: int) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return f"{v:.{digits}f}"


def metrics_to_markdown(metrics: Mapping[str, float], digits: int = 4) -> str:
    """Two-column markdown table ``| metric | value |`` in key order."""
    lines = ["| metric | value |", "|---|---|"]
    lines += [f"| {k} | {_fmt(float(v), digits)} |" for k, v in metrics.items()]
    return "\n".join(lines) + "\n"


def split_per_iteration(metrics: Mapping[str, float]) -> dict[str, dict[int, float]]:
    """``{"iter2/mask/AP": v}`` -> ``{"mask/AP": {2: v}}`` (non-iteration keys dropped)."""
    out: dict[str, dict[int, float]] = defaultdict(dict)
    for k, v in metrics.items():
        m = ITER_RE.match(k)
        if m:
            out[m.group(2)][int(m.group(1))] = float(v)
    return dict(out)


def per_iteration_markdown(metrics: Mapping[str, float], digits: int = 4) -> str:
    """Markdown table with one row per metric and one column per refinement iteration t."""
    per = split_per_iteration(metrics)
    ts = sorted({t for d in per.values() for t in d})
    lines = ["| metric | " + " | ".join(f"t={t}" for t in ts) + " |"]
    lines.append("|---|" + "---|" * len(ts))
    for name in sorted(per):
        cells = [_fmt(per[name][t], digits) if t in per[name] else "" for t in ts]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def save_metrics_json(metrics: Mapping[str, float], path: str | Path) -> Path:
    """Write metrics as JSON (NaN becomes ``null`` so the file stays strict JSON)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean = {
        k: (None if isinstance(v, float) and math.isnan(v) else float(v))
        for k, v in metrics.items()
    }
    path.write_text(json.dumps(clean, indent=2, sort_keys=True) + "\n")
    return path


def plot_per_iteration(
    metrics: Mapping[str, float], names: Sequence[str] | None, path: str | Path
) -> Path:
    """Curves metric vs refinement iteration t, one line per name (all when ``None``)."""
    import matplotlib

    matplotlib.use("Agg")  # headless: never needs a display
    import matplotlib.pyplot as plt

    per = split_per_iteration(metrics)
    names = sorted(per) if names is None else list(names)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for name in names:
        if name not in per:
            raise KeyError(f"no per-iteration values for {name!r}")
        ts = sorted(per[name])
        ax.plot(ts, [per[name][t] for t in ts], marker="o", label=name)
    ax.set_xlabel("refinement iteration t")
    ax.set_ylabel("metric")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_report(
    metrics: Mapping[str, float], out_dir: str | Path, name: str = "metrics"
) -> dict[str, Path]:
    """Write ``{name}.json``, ``{name}.md`` and, when there are per-iteration keys,
    ``{name}_per_iter.png``; returns the paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": save_metrics_json(metrics, out_dir / f"{name}.json")}
    md = metrics_to_markdown(metrics)
    if split_per_iteration(metrics):
        md += "\n" + per_iteration_markdown(metrics)
        paths["png"] = plot_per_iteration(metrics, None, out_dir / f"{name}_per_iter.png")
    paths["md"] = out_dir / f"{name}.md"
    paths["md"].write_text(md)
    return paths
