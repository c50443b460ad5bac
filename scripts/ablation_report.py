#!/usr/bin/env python
"""Closed-loop ablation report: mean ± std per setting and paired tests against T = 0.

Reads a Hydra multirun tree (every job dir with ``.hydra/overrides.yaml`` and ``metrics.json``,
loaded with ``scripts/aggregate_multirun.py``'s loader), groups jobs by their overrides minus
the seed, and writes ``<out>.md`` and ``<out>.csv``:

* per setting: ``n`` jobs, trainable parameters (``model/trainable_params``), and for each
  metric mean ± sample std over seeds with the number of finite values when some are missing;
* per setting and metric: the paired difference to the reference setting (default
  ``model.region_head.num_iters=0`` with no baseline) *of the same seed*: mean, std, number of
  pairs and a two-sided paired t-test (``scipy.stats.ttest_rel``). A reference with a single job
  (T = 0 on a frozen base trains nothing, so it does not depend on the seed) is paired with
  every seed; the table says so.

A metric with no data (a split that was not evaluated, COCO's ``-1`` for "nothing to average")
is NaN with its count, never 0; missing splits do not crash the report.

Usage::

    python scripts/ablation_report.py logs/region_head/multiruns/ablation --out results/ablation
"""

from __future__ import annotations

import argparse
import math
import sys
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from statistics import mean, stdev
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from aggregate_multirun import Job, find_jobs, write_md_csv  # noqa: E402

DEFAULT_METRICS = (
    "test/test/mask/AP",
    "test/test/mask/AP_S",
    "test/test/boundary/AP",
    "test/test_small/mask/AP",
    "test/test_crowded/mask/AP",
)
PARAMS_KEY = "model/trainable_params"
NO_BASELINE = ("", "none")


@dataclass
class Setting:
    overrides: dict[str, str]
    jobs: list[Job]

    def values(self, metric: str, seed_key: str) -> dict[str, float]:
        """{seed: value} of the finite values (COCO's -1 "no data" counts as missing)."""
        out = {}
        for job in self.jobs:
            v = job.metrics.get(metric, math.nan)
            if math.isfinite(v) and v != -1.0:
                out[job.overrides.get(seed_key, job.path.name)] = v
        return out


@dataclass
class Paired:
    mean: float
    std: float
    n: int
    t: float
    p: float


def group_settings(jobs: Sequence[Job], seed_key: str) -> list[Setting]:
    groups: dict[tuple[tuple[str, str], ...], list[Job]] = defaultdict(list)
    for job in jobs:
        key = tuple(sorted((k, v) for k, v in job.overrides.items() if k != seed_key))
        groups[key].append(job)
    return [Setting(dict(k), v) for k, v in sorted(groups.items())]


def is_reference(setting: Setting, reference: dict[str, str]) -> bool:
    o = setting.overrides
    baseline = o.get("model/baseline", "")
    return baseline in NO_BASELINE and all(o.get(k) == v for k, v in reference.items())


def paired_test(values: dict[str, float], ref: dict[str, float], ref_shared: bool) -> Paired:
    """Per-seed differences ``values - ref``; ``ref_shared``: one reference value for all."""
    from scipy import stats

    if ref_shared and ref:
        (only,) = ref.values()
        pairs = [(v, only) for v in values.values()]
    else:
        pairs = [(v, ref[s]) for s, v in values.items() if s in ref]
    diffs = [a - b for a, b in pairs]
    n = len(diffs)
    if n == 0:
        return Paired(math.nan, math.nan, 0, math.nan, math.nan)
    sd = stdev(diffs) if n > 1 else math.nan
    if n < 2 or sd <= 1e-12:
        # no variance estimate (one pair, or identical differences, e.g. two frozen T=0 runs):
        # the test is undefined rather than infinitely significant
        t, p = math.nan, math.nan
    else:
        res = stats.ttest_rel([a for a, _ in pairs], [b for _, b in pairs])
        t, p = float(res.statistic), float(res.pvalue)
    return Paired(mean(diffs), sd, n, t, p)


def _fmt(values: Sequence[float], n_jobs: int, scale: float, digits: int) -> str:
    if not values:
        return f"n/a (n=0/{n_jobs})"
    text = f"{mean(values) * scale:.{digits}f}"
    if len(values) > 1:
        text += f" ± {stdev(values) * scale:.{digits}f}"
    return text if len(values) == n_jobs else f"{text} (n={len(values)}/{n_jobs})"


def _fmt_paired(pr: Paired, scale: float, digits: int) -> str:
    if pr.n == 0:
        return "n/a"
    text = f"{pr.mean * scale:+.{digits}f}"
    if pr.n > 1:
        text += f" ± {pr.std * scale:.{digits}f}"
    p = "n/a" if math.isnan(pr.p) else f"{pr.p:.3f}"
    return f"{text} (n={pr.n}, p={p})"


def build_report(
    settings: Sequence[Setting],
    metrics: Sequence[str],
    reference: dict[str, str],
    seed_key: str = "seed",
    scale: float = 100.0,
    digits: int = 2,
) -> tuple[str, list[dict[str, Any]]]:
    """(markdown, csv rows) for the grouped settings."""
    keys = sorted({k for s in settings for k in s.overrides})
    varying = [k for k in keys if len({s.overrides.get(k, "") for s in settings}) > 1] or keys
    refs = [s for s in settings if is_reference(s, reference)]
    ref = refs[0] if len(refs) == 1 else None
    ref_shared = ref is not None and len(ref.jobs) == 1
    short = [m.removeprefix("test/") for m in metrics]

    head = [*varying, "n", "trainable params", *short]
    md = ["## Mean ± std over seeds", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    paired_md = ["| " + " | ".join([*varying, *short]) + " |", "|" + "---|" * (len(varying) + len(short))]
    rows: list[dict[str, Any]] = []
    for s in settings:
        params = [j.metrics[PARAMS_KEY] for j in s.jobs if PARAMS_KEY in j.metrics]
        row: dict[str, Any] = {k: s.overrides.get(k, "") for k in keys}
        row["n"] = len(s.jobs)
        row["trainable_params"] = int(mean(params)) if params else math.nan
        cells = [s.overrides.get(k, "") for k in varying] + [
            str(len(s.jobs)), f"{int(mean(params)):,}" if params else "n/a"]
        pcells = [s.overrides.get(k, "") for k in varying]
        for m in metrics:
            vals = s.values(m, seed_key)
            cells.append(_fmt(list(vals.values()), len(s.jobs), scale, digits))
            row[f"{m}_mean"] = mean(vals.values()) if vals else math.nan
            row[f"{m}_std"] = stdev(vals.values()) if len(vals) > 1 else math.nan
            row[f"{m}_n"] = len(vals)
            if ref is not None and s is not ref:
                pr = paired_test(vals, ref.values(m, seed_key), ref_shared)
                pcells.append(_fmt_paired(pr, scale, digits))
            else:
                pr = Paired(math.nan, math.nan, 0, math.nan, math.nan)
                pcells.append("reference" if s is ref else "n/a")
            row.update({f"{m}_diff_mean": pr.mean, f"{m}_diff_std": pr.std,
                        f"{m}_diff_n": pr.n, f"{m}_t": pr.t, f"{m}_p": pr.p})
        md.append("| " + " | ".join(cells) + " |")
        paired_md.append("| " + " | ".join(pcells) + " |")
        rows.append(row)

    shared = [f"`{k}={settings[0].overrides[k]}`" for k in keys if k not in varying
              and all(k in s.overrides for s in settings)]
    if shared:
        md += ["", "Shared overrides: " + " ".join(shared)]
    md += ["", f"Values ×{scale:g}; `(n=k/N)`: only k of the N jobs have a value (others NaN).",
           "", "## Paired difference to the reference (same seed)", ""]
    ref_text = " ".join(f"`{k}={v}`" for k, v in reference.items())
    if ref is None:
        md.append(f"No unique reference setting ({ref_text}, no baseline): found {len(refs)}; "
                  "paired tests skipped.")
    else:
        md.append(f"Reference: {ref_text} (no baseline), {len(ref.jobs)} job(s)"
                  + ("; a single job, seed-independent, paired with every seed." if ref_shared
                     else "; paired by seed."))
        md += ["Cells: mean difference ± std of the per-seed differences, number of pairs, "
               "two-sided paired t-test p-value.", "", *paired_md]
    return "\n".join(md) + "\n", rows


def write_report(root: Path, out: Path, metrics: Sequence[str], reference: dict[str, str],
                 seed_key: str = "seed", scale: float = 100.0, digits: int = 2,
                 metrics_file: str = "metrics.json", notes: str = "") -> tuple[Path, Path]:
    """Write `<out>.md` / `<out>.csv`; `notes` (markdown: protocol, reading) goes under the
    title, so the committed report carries its own interpretation."""
    jobs, missing = find_jobs(root, metrics_file)
    if not jobs:
        raise FileNotFoundError(f"no job with {metrics_file!r} under {root}")
    for job_dir in missing:
        print(f"warning: no {metrics_file} in {job_dir}; skipped", file=sys.stderr)
    md, rows = build_report(group_settings(jobs, seed_key), metrics, reference, seed_key,
                            scale, digits)
    head = f"# Closed-loop ablation: `{root}`\n\n" + (notes.strip() + "\n\n" if notes else "")
    return write_md_csv(out, head + md, rows)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("root", type=Path, help="multirun directory (any level above the job dirs)")
    p.add_argument("--out", type=Path, default=Path("results/ablation"))
    p.add_argument("--metrics", default=",".join(DEFAULT_METRICS))
    p.add_argument("--reference", default="model.region_head.num_iters=0",
                   help="comma-separated key=value overrides of the reference setting")
    p.add_argument("--seed-key", default="seed")
    p.add_argument("--scale", type=float, default=100.0)
    p.add_argument("--digits", type=int, default=2)
    p.add_argument("--metrics-file", default="metrics.json")
    p.add_argument("--notes", type=Path, help="markdown file inserted under the title")
    args = p.parse_args(argv)
    if args.notes is not None and not args.notes.is_file():
        p.error(f"--notes {args.notes}: no such file")
    notes = args.notes.read_text() if args.notes is not None else ""
    reference = dict(item.split("=", 1) for item in args.reference.split(",") if item)
    md_path, csv_path = write_report(args.root, args.out, [m for m in args.metrics.split(",") if m],
                                     reference, args.seed_key, args.scale, args.digits,
                                     args.metrics_file, notes)
    print(md_path.read_text())
    print(f"wrote {md_path} and {csv_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
