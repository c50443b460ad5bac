#!/usr/bin/env python
"""Aggregate a Hydra multirun into a results table: mean ± std over seeds.

Hydra writes one directory per job (``multirun/<date>/<time>/<job_num>/``) holding
``.hydra/overrides.yaml`` (the list of ``key=value`` command-line overrides) and, in this
project, a metrics JSON written at the end of the run. Jobs are grouped by their overrides minus
the ignored keys (``seed`` by default); every numeric metric is averaged within a group.

Usage::

    python scripts/aggregate_multirun.py multirun/2026-11-21 \
        --metrics-file test_metrics.json --metrics mask/AP,boundary/AP --out results/table

writes ``results/table.md`` (mean ± sample std, ``n`` = number of seeds; NaN values -- a metric
with no data -- are skipped and the cell then shows how many runs it averages, ``(n=k)``) and
``results/table.csv`` (``<metric>_mean``, ``<metric>_std`` and ``<metric>_n`` per metric).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from statistics import mean, stdev
from typing import Any

import yaml


@dataclass
class Job:
    path: Path
    overrides: dict[str, str]
    metrics: dict[str, float]


def _override_key(raw: str) -> str:
    # "+model.x", "++model.x" and "~model.x" all name the same knob for grouping purposes.
    return raw.lstrip("+~")


def parse_overrides(lines: Sequence[str]) -> dict[str, str]:
    """``["a=1", "+b.c=x"]`` -> ``{"a": "1", "b.c": "x"}`` (deletions ``~k`` map to ``""``)."""
    out: dict[str, str] = {}
    for line in lines:
        key, sep, value = str(line).partition("=")
        out[_override_key(key)] = value if sep else ""
    return out


def flatten_metrics(obj: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Numeric leaves of a (nested) JSON dict, nested keys joined with ``/``."""
    out: dict[str, float] = {}
    for k, v in obj.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten_metrics(v, key + "/"))
        elif isinstance(v, bool):
            continue
        elif isinstance(v, int | float):
            out[key] = float(v)
        elif v is None:
            out[key] = math.nan
    return out


def find_jobs(root: Path, metrics_file: str) -> tuple[list[Job], list[Path]]:
    """All job dirs under ``root`` (those with ``.hydra/overrides.yaml``); jobs whose metrics
    file is missing are returned separately (crashed or unfinished runs)."""
    jobs, missing = [], []
    for ov in sorted(root.rglob(".hydra/overrides.yaml")):
        job_dir = ov.parent.parent
        mpath = job_dir / metrics_file
        if not mpath.is_file():
            # Lightning/loggers may nest outputs one level deeper; accept a unique match.
            found = sorted(job_dir.rglob(Path(metrics_file).name))
            if len(found) != 1:
                missing.append(job_dir)
                continue
            mpath = found[0]
        overrides = parse_overrides(yaml.safe_load(ov.read_text()) or [])
        jobs.append(Job(job_dir, overrides, flatten_metrics(json.loads(mpath.read_text()))))
    return jobs, missing


@dataclass
class Group:
    overrides: dict[str, str]
    jobs: list[Job]

    def stats(self, metric: str) -> tuple[float, float, int]:
        """(mean, sample std, n) over the jobs that have a finite value of ``metric``."""
        vals = [
            j.metrics[metric] for j in self.jobs if math.isfinite(j.metrics.get(metric, math.nan))
        ]
        if not vals:
            return math.nan, math.nan, 0
        return mean(vals), (stdev(vals) if len(vals) > 1 else math.nan), len(vals)


def tested_checkpoint(job_dir: Path) -> Path:
    """The job's best-on-val checkpoint (the one it tested): the single `*.ckpt` in
    `<job_dir>/checkpoints` besides `last.ckpt`."""
    best = sorted(p for p in (job_dir / "checkpoints").glob("*.ckpt") if p.name != "last.ckpt")
    if len(best) != 1:
        raise FileNotFoundError(f"{job_dir}/checkpoints: expected one best-on-val checkpoint "
                                f"besides last.ckpt, found {[p.name for p in best]}")
    return best[0]


def group_jobs(jobs: Sequence[Job], ignore: Sequence[str]) -> list[Group]:
    groups: dict[tuple[tuple[str, str], ...], list[Job]] = defaultdict(list)
    for job in jobs:
        key = tuple(sorted((k, v) for k, v in job.overrides.items() if k not in ignore))
        groups[key].append(job)
    return [Group(dict(k), v) for k, v in sorted(groups.items())]


def _fmt(m: float, s: float, digits: int, scale: float, n: int, total: int) -> str:
    """``mean ± std``; a cell averaged over fewer runs than its group (NaN values, e.g. an empty
    metric group, are skipped, never averaged as numbers) says how many: ``(n=k)``."""
    suffix = "" if n == total else f" (n={n})"
    if math.isnan(m):
        return "n/a" + suffix
    text = f"{m * scale:.{digits}f}"
    return (text if math.isnan(s) else f"{text} ± {s * scale:.{digits}f}") + suffix


def build_tables(
    groups: Sequence[Group], metrics: Sequence[str], digits: int = 2, scale: float = 1.0
) -> tuple[str, list[dict[str, Any]]]:
    """(markdown, csv rows). The CSV has every override key; the markdown shows the keys that
    vary between groups as columns and lists the shared ones under the table."""
    keys = sorted({k for g in groups for k in g.overrides})
    varying = [k for k in keys if len({g.overrides.get(k, "") for g in groups}) > 1]
    shown = varying if len(groups) > 1 and varying else keys
    header = [*shown, "n", *metrics]
    md = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    rows: list[dict[str, Any]] = []
    for g in groups:
        row: dict[str, Any] = {k: g.overrides.get(k, "") for k in keys}
        row["n"] = len(g.jobs)
        cells = [str(row[k]) for k in shown] + [str(len(g.jobs))]
        for m in metrics:
            mu, sd, n = g.stats(m)
            row[f"{m}_mean"], row[f"{m}_std"], row[f"{m}_n"] = mu, sd, n
            cells.append(_fmt(mu, sd, digits, scale, n, len(g.jobs)))
        md.append("| " + " | ".join(cells) + " |")
        rows.append(row)
    shared = [f"{k}={groups[0].overrides[k]}" for k in keys
              if k not in shown and all(k in g.overrides for g in groups)]
    if shared:
        md += ["", "Shared overrides: " + " ".join(f"`{item}`" for item in shared)]
    return "\n".join(md) + "\n", rows


def aggregate(
    root: Path,
    out: Path,
    metrics_file: str = "metrics.json",
    metrics: Sequence[str] | None = None,
    ignore: Sequence[str] = ("seed",),
    digits: int = 2,
    scale: float = 1.0,
) -> tuple[Path, Path]:
    """Write ``{out}.md`` and ``{out}.csv``; returns their paths."""
    jobs, missing = find_jobs(root, metrics_file)
    if not jobs:
        raise FileNotFoundError(f"no job with {metrics_file!r} under {root}")
    for job_dir in missing:
        print(f"warning: no {metrics_file} in {job_dir}; skipped", file=sys.stderr)
    names = list(metrics) if metrics else sorted({k for j in jobs for k in j.metrics})
    md, rows = build_tables(group_jobs(jobs, ignore), names, digits, scale)
    return write_md_csv(out, md, rows)


def write_md_csv(out: Path, md: str, rows: list[dict]) -> tuple[Path, Path]:
    """`out`.md with the markdown and `out`.csv with `rows` (columns: union of the rows' keys)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    md_path, csv_path = out.with_suffix(".md"), out.with_suffix(".csv")
    md_path.write_text(md)
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))
        writer.writeheader()
        writer.writerows(rows)
    return md_path, csv_path


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("root", type=Path, help="multirun directory (any level above the job dirs)")
    p.add_argument("--metrics-file", default="metrics.json", help="JSON file in each job dir")
    p.add_argument("--metrics", default="", help="comma-separated metric keys (default: all)")
    p.add_argument("--ignore", default="seed", help="comma-separated overrides to average over")
    p.add_argument("--out", type=Path, default=None, help="output path without suffix")
    p.add_argument("--digits", type=int, default=2)
    p.add_argument("--scale", type=float, default=1.0, help="e.g. 100 to print AP in percent")
    args = p.parse_args(argv)
    out = args.out or args.root / "results"
    md_path, csv_path = aggregate(
        args.root,
        out,
        args.metrics_file,
        [m for m in args.metrics.split(",") if m],
        [k for k in args.ignore.split(",") if k],
        args.digits,
        args.scale,
    )
    print(md_path.read_text())
    print(f"wrote {md_path} and {csv_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
