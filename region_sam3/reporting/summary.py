"""The short console summary printed at the end of `eval.py` and of the test stage.

One compact markdown table per split with the numbers a reader looks for first; the full metrics
stay in the metrics JSON and `report.md`. Keys are the LightningModule's public layout
(`<stage>/[<split>/][iter{t}/]<group>/<name>`, see `region_sam3.reporting.markdown`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from region_sam3.outputs import ITER_METRIC_RE as _ITER

#: (column title, `<group>/<name>` key) of the summary, in display order
SUMMARY_COLUMNS: tuple[tuple[str, str], ...] = (
    ("AP", "mask/AP"), ("AP50", "mask/AP50"), ("AP75", "mask/AP75"), ("AP_S", "mask/AP_S"),
    ("AP_M", "mask/AP_M"), ("AP_L", "mask/AP_L"), ("boundary AP", "boundary/AP"),
    ("cgF1", "cgf1/cgF1"), ("IL_MCC", "cgf1/IL_MCC"), ("mIoU top-K", "miou/mIoU_topk"),
)
#: (column title, count key) shown when the metrics carry them
COUNT_COLUMNS: tuple[tuple[str, str], ...] = (("images", "mask/num_images"),
                                              ("GT", "mask/num_gt"))
NA = "n/a"


def _value(row: Mapping[str, float], key: str) -> float | None:
    """The value, or None for no data: absent, NaN, or COCO's -1 ("nothing to average")."""
    value = row.get(key)
    if value is None or math.isnan(value) or value == -1.0:
        return None
    return float(value)


def _cell(value: float | None, digits: int, signed: bool = False) -> str:
    if value is None:
        return NA
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def _count(row: Mapping[str, float], key: str) -> str:
    value = _value(row, key)
    return NA if value is None else str(int(value))


def _split_rows(metrics: Mapping[str, float], split: str,
                stage: str) -> dict[str | int, dict[str, float]]:
    """`{"final" | t: {"<group>/<name>": value}}` of one split. With one test split the keys carry
    no split name (`test/mask/AP`); with several they do (`test/<split>/mask/AP`)."""
    prefix = f"{stage}/{split}/"
    if not any(k.startswith(prefix) for k in metrics):
        prefix = f"{stage}/"
    rows: dict[str | int, dict[str, float]] = {}
    for key, value in metrics.items():
        if key.startswith(prefix):
            rest = key[len(prefix):]
            match = _ITER.match(rest)
            it: str | int = int(match.group(1)) if match else "final"
            rows.setdefault(it, {})[match.group(2) if match else rest] = float(value)
    return rows


def summary_table(metrics: Mapping[str, float], split: str, stage: str = "test",
                  digits: int = 3) -> str:
    """Markdown table for one split: the model's output row (M^T) and, when the region head
    logged per-iteration metrics (`iter{t}/` keys), the M^0 row (plain SAM3, `iter0`) and the
    change M^T − M^0. Missing / NaN values read "n/a", never 0.

    `metrics`: the flat public dict (values are floats); `split`: the test split's name.
    """
    rows = _split_rows(metrics, split, stage)
    final = rows.get("final", {})
    counts = [(title, key) for title, key in COUNT_COLUMNS if key in final]
    header = ["split", "masks"] + [t for t, _ in counts] + [t for t, _ in SUMMARY_COLUMNS]
    lines = ["| " + " | ".join(header) + " |",
             "| --- | --- |" + " ---: |" * (len(header) - 2)]
    count_cells = [_count(final, key) for _, key in counts]
    iterations = sorted(k for k in rows if isinstance(k, int))
    label = "M^T (region head)" if iterations else "final"
    values = [_value(final, key) for _, key in SUMMARY_COLUMNS]
    lines.append("| " + " | ".join([split, label] + count_cells
                                   + [_cell(v, digits) for v in values]) + " |")
    if iterations and iterations[0] == 0:
        before = [_value(rows[0], key) for _, key in SUMMARY_COLUMNS]
        change = [None if a is None or b is None else a - b for a, b in zip(values, before)]
        blank = [""] * len(counts)
        lines.append("| " + " | ".join([split, "M^0 (SAM3, iter0)"] + blank
                                       + [_cell(v, digits) for v in before]) + " |")
        lines.append("| " + " | ".join([split, "M^T − M^0"] + blank
                                       + [_cell(v, digits, signed=True) for v in change]) + " |")
    if not final and not iterations:
        lines.append("| " + " | ".join([split, "final"] + [NA] * (len(header) - 2)) + " |")
    return "\n".join(lines) + "\n"


def summary_tables(metrics: Mapping[str, float], splits: Sequence[str],
                   stage: str = "test", digits: int = 3) -> str:
    """`summary_table` for every split, separated by blank lines."""
    return "\n".join(summary_table(metrics, split, stage, digits) for split in splits)
