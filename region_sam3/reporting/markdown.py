"""Metrics dict -> `report.md` text (pure functions: no model, no files except the PNG curves).

Key layout (produced by the LightningModule's evaluators):
`<stage>/<split>/<group>/<name>` for several test splits, `<stage>/<group>/<name>` for one, and
`.../iter{t}/<group>/<name>` for refinement iteration t. A metric with no data is NaN; the group
says how many images it had in `<group>/num_images` when the evaluator logs it.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path

from region_sam3.outputs import ITER_METRIC_RE as _ITER

#: (column title, key under a split/iteration prefix) of the main table
MAIN_COLUMNS: tuple[tuple[str, str], ...] = (
    ("AP", "mask/AP"), ("AP50", "mask/AP50"), ("AP75", "mask/AP75"), ("AP_S", "mask/AP_S"),
    ("AP_M", "mask/AP_M"), ("AP_L", "mask/AP_L"), ("boundary AP", "boundary/AP"),
    ("mIoU", "miou/mIoU"), ("mIoU top-K", "miou/mIoU_topk"),
)
#: the per-iteration curves of the report (title, key)
CURVES: tuple[tuple[str, str], ...] = (
    ("mask AP", "mask/AP"), ("AP_S", "mask/AP_S"), ("boundary AP", "boundary/AP"),
    # threshold-free: the thresholded mIoU is 0 when no score reaches the threshold
    ("mIoU (top-K)", "miou/mIoU_topk"),
)

NO_DATA = "n/a (0 images)"


def split_metrics(metrics: Mapping[str, float], splits: Sequence[str],
                  stage: str = "test") -> dict[str, dict[str | int, dict[str, float]]]:
    """`{split: {"final" | t: {"<group>/<name>": value}}}`.

    With one split the keys carry no split name (`test/mask/AP`); it is `splits[0]`.
    """
    out: dict[str, dict[str | int, dict[str, float]]] = {}
    for split in splits:
        prefix = f"{stage}/{split}/" if len(splits) > 1 else f"{stage}/"
        rows: dict[str | int, dict[str, float]] = defaultdict(dict)
        for key, value in metrics.items():
            if not key.startswith(prefix):
                continue
            rest = key[len(prefix):]
            match = _ITER.match(rest)
            if match:
                rows[int(match.group(1))][match.group(2)] = float(value)
            elif len(splits) == 1 or rest.split("/", 1)[0] not in splits:
                rows["final"][rest] = float(value)
        out[split] = dict(rows)
    return out


def format_value(value: float | None, row: Mapping[str, float], key: str, digits: int = 3) -> str:
    """A number, or why there is none: "n/a (0 images)" when the group had no image.
    COCO's -1 ("nothing to average", older evaluators) counts as no data, like NaN."""
    if value is not None and not math.isnan(value) and value != -1.0:
        return f"{value:.{digits}f}"
    group = key.split("/", 1)[0]
    count = row.get(f"{group}/num_images")
    if count is None or math.isnan(count) or count == 0:
        return NO_DATA
    return f"n/a ({int(count)} images, none in this group)"


def _iteration_order(rows: Mapping[str | int, Mapping[str, float]]) -> list[str | int]:
    return (["final"] if "final" in rows else []) + sorted(k for k in rows if k != "final")


def main_table(metrics: Mapping[str, float], splits: Sequence[str], stage: str = "test",
               digits: int = 3) -> str:
    """Markdown table: one row per split and per refinement iteration (`final` = the model's
    output M^T; `t=0` is plain SAM3's mask M^0)."""
    per_split = split_metrics(metrics, splits, stage)
    head = "| split | iteration | images | " + " | ".join(c for c, _ in MAIN_COLUMNS) + " |"
    lines = [head, "|" + "---|" * (len(MAIN_COLUMNS) + 3)]
    for split in splits:
        rows = per_split.get(split, {})
        if not rows:
            lines.append(f"| {split} | – | 0 | " + " | ".join([NO_DATA] * len(MAIN_COLUMNS)) + " |")
            continue
        final = rows.get("final", {})
        for it in _iteration_order(rows):
            row = dict(final)
            row.update(rows[it])  # an iteration row falls back to the split's counts
            images = row.get("mask/num_images")
            images_cell = "?" if images is None or math.isnan(images) else str(int(images))
            cells = [format_value(row.get(key), row, key, digits) for _, key in MAIN_COLUMNS]
            label = it if it == "final" else f"t={it}"
            lines.append(f"| {split} | {label} | {images_cell} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_iteration_curves(metrics: Mapping[str, float], splits: Sequence[str], path: str | Path,
                          stage: str = "test") -> Path | None:
    """PNG of AP, AP_S, boundary AP and mIoU against refinement iteration t, one line per
    split; None when no iteration was evaluated (no region head)."""
    per_split = split_metrics(metrics, splits, stage)
    if not any(isinstance(k, int) for rows in per_split.values() for k in rows):
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(CURVES), figsize=(3.2 * len(CURVES), 3.0), squeeze=False)
    for ax, (title, key) in zip(axes[0], CURVES):
        for split in splits:
            rows = per_split.get(split, {})
            ts = sorted(k for k in rows if isinstance(k, int))
            values = [rows[t].get(key, math.nan) for t in ts]
            if ts and not all(math.isnan(v) for v in values):
                ax.plot(ts, values, marker="o", label=split)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("refinement iteration t")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def all_metrics_table(metrics: Mapping[str, float], digits: int = 4) -> str:
    """Every metric, one per line (NaN shown as n/a)."""
    lines = ["| metric | value |", "|---|---|"]
    for key in sorted(metrics):
        value = float(metrics[key])
        lines.append(f"| `{key}` | {'n/a' if math.isnan(value) else f'{value:.{digits}f}'} |")
    return "\n".join(lines) + "\n"


def render_report(metrics: Mapping[str, float], splits: Sequence[str], *, title: str,
                  stage: str = "test", meta: Mapping[str, str] | None = None,
                  images: Mapping[str, str] | None = None) -> str:
    """The whole `report.md`.

    Args:
        meta: `{label: text}` lines under the title (checkpoint, date, ...).
        images: `{caption: relative path}` PNGs embedded after the table (curves, overlays).
    """
    parts = [f"# {title}\n"]
    for label, text in (meta or {}).items():
        parts.append(f"- **{label}**: {text}")
    parts.append("\n## Results per split and refinement iteration\n")
    parts.append("`final` is the model's output; `t=0` is SAM3's own mask M^0 and `t=T` the "
                 "region head's last refinement. `n/a (0 images)`: the group had no data.\n")
    parts.append(main_table(metrics, splits, stage))
    for caption, rel in (images or {}).items():
        parts.append(f"\n### {caption}\n\n![{caption}]({rel})\n")
    parts.append("\n<details><summary>All metrics</summary>\n\n" + all_metrics_table(metrics)
                 + "\n</details>\n")
    return "\n".join(parts)
