"""Statistics of the ablation report (scripts/ablation_report.py): paired t-tests, Holm's
step-down correction and each job's best validation value.

Kept apart from the report's table layout so the numbers can be tested on their own
(tests/utils/test_ablation_report.py).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from statistics import mean, stdev

HISTORY_FILE = "metrics_history.json"


@dataclass
class Paired:
    mean: float
    std: float
    n: int
    t: float
    p: float


NO_PAIRS = Paired(math.nan, math.nan, 0, math.nan, math.nan)


def paired_test(values: Mapping[str, float], ref: Mapping[str, float], ref_shared: bool) -> Paired:
    """Per-seed differences ``values - ref`` and a two-sided paired t-test.

    ``values`` / ``ref``: {seed: value}. ``ref_shared``: the reference is one seed-independent
    value (T = 0 on a frozen base trains nothing) paired with every seed, which makes the test a
    one-sample t-test of the values against it.
    """
    from scipy import stats

    if ref_shared and ref:
        (only,) = ref.values()
        pairs = [(v, only) for v in values.values()]
    else:
        pairs = [(v, ref[s]) for s, v in values.items() if s in ref]
    diffs = [a - b for a, b in pairs]
    n = len(diffs)
    if n == 0:
        return NO_PAIRS
    sd = stdev(diffs) if n > 1 else math.nan
    if n < 2 or sd <= 1e-12:
        # no variance estimate (one pair, or identical differences): the test is undefined
        # rather than infinitely significant
        t, p = math.nan, math.nan
    else:
        res = stats.ttest_rel([a for a, _ in pairs], [b for _, b in pairs])
        t, p = float(res.statistic), float(res.pvalue)
    return Paired(mean(diffs), sd, n, t, p)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error control), same order as the input.

    NaN p-values (undefined tests) stay NaN and do not count towards the family size.
    Adjusted p_(i) = max_{j <= i} min(1, (m - j + 1) p_(j)) over the sorted defined p-values.
    """
    defined = sorted((p, i) for i, p in enumerate(pvalues) if not math.isnan(p))
    m = len(defined)
    out = [math.nan] * len(pvalues)
    running = 0.0
    for rank, (p, i) in enumerate(defined):
        running = max(running, min(1.0, (m - rank) * p))
        out[i] = running
    return out


def best_validation(job_dir: Path, metric: str, fallback: Mapping[str, float]) -> float:
    """The best (max) finite value of ``metric`` over the job's validations.

    Read from ``metrics_history.json`` (one dict per logged step; the checkpoint the job tested
    was chosen on this maximum); without a history, ``fallback[metric]`` (the last value).
    NaN when no validation has a value.
    """
    path = job_dir / HISTORY_FILE
    values: list[float] = []
    if path.is_file():
        for row in json.loads(path.read_text()):
            v = row.get(metric)
            if isinstance(v, int | float) and math.isfinite(v) and v != -1.0:
                values.append(float(v))
    else:
        v = fallback.get(metric, math.nan)
        if math.isfinite(v) and v != -1.0:
            values.append(v)
    return max(values) if values else math.nan
