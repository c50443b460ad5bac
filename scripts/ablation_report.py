#!/usr/bin/env python
"""Closed-loop ablation report: mean ± std per setting, paired tests against T = 0 and head to
head against the best baseline, Holm-corrected, and the learning-rate tuning that preceded them.

Reads a Hydra multirun tree (every job dir with ``.hydra/overrides.yaml`` and ``metrics.json``,
loaded with ``scripts/aggregate_multirun.py``'s loader) and writes ``<out>.md`` and ``<out>.csv``:

* jobs with an ``hparams_search`` override are **tuning trials** (scripts/run_ablation.sh
  ``tune``): tabulated as method x lr -> best validation value, the winner marked;
* the other jobs are grouped by their overrides minus the seed. Per setting: ``n`` jobs,
  trainable parameters (``model/trainable_params``), the best validation value of
  ``--select-metric`` (what chose the tested checkpoint) and each metric's mean ± sample std;
* per setting and metric: the paired difference to the reference setting (default
  ``model.region_head.num_iters=0`` with no baseline) *of the same seed*: mean, std, number of
  pairs and a two-sided paired t-test (``scipy.stats.ttest_rel``). A reference with a single job
  (T = 0 on a frozen base trains nothing, so it does not depend on the seed) is paired with
  every seed; the table says so;
* head to head: every non-baseline setting against the **best baseline**, the baseline setting
  with the highest mean best-validation value (chosen on ``val``, never on a test split),
  paired by seed;
* each table's p-values get Holm's step-down correction over the whole table (every setting x
  metric is one family), printed next to the raw p, with the count significant before/after.

A metric with no data (a split that was not evaluated, COCO's ``-1`` for "nothing to average")
is NaN with its count, never 0; missing splits do not crash the report.

Usage::

    python scripts/ablation_report.py logs/ablation/multiruns/ablation --out results/ablation
"""

from __future__ import annotations

import argparse
import math
import sys
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from statistics import mean, stdev
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ablation_stats import NO_PAIRS, Paired, best_validation, holm, paired_test  # noqa: E402
from aggregate_multirun import Job, find_jobs, write_md_csv  # noqa: E402

from region_sam3.workflow.ablation import plot_paired_grid, setting_label  # noqa: E402

DEFAULT_METRICS = (
    "test/test/mask/AP",
    "test/test/mask/AP_S",
    "test/test/boundary/AP",
    "test/test_small/mask/AP",
    "test/test_crowded/mask/AP",
)
PARAMS_KEY = "model/trainable_params"
BASELINE_KEY = "model/baseline"
TUNING_KEY = "hparams_search"
LR_KEY = "model.optimizer.lr"
NO_BASELINE = ("", "none")
ALPHA = 0.05

__all__ = ["Paired", "paired_test", "holm", "build_report", "write_report", "main"]


@dataclass
class Setting:
    overrides: dict[str, str]
    jobs: list[Job]
    selection: dict[str, float] = field(default_factory=dict)  # {seed: best val value}

    def values(self, metric: str, seed_key: str) -> dict[str, float]:
        """{seed: value} of the finite values (COCO's -1 "no data" counts as missing)."""
        out = {}
        for job in self.jobs:
            v = job.metrics.get(metric, math.nan)
            if math.isfinite(v) and v != -1.0:
                out[job.overrides.get(seed_key, job.path.name)] = v
        return out

    @property
    def baseline(self) -> str:
        b = self.overrides.get(BASELINE_KEY, "")
        return "" if b in NO_BASELINE else b


def group_settings(jobs: Sequence[Job], seed_key: str, select_metric: str = "") -> list[Setting]:
    groups: dict[tuple[tuple[str, str], ...], list[Job]] = defaultdict(list)
    for job in jobs:
        key = tuple(sorted((k, v) for k, v in job.overrides.items() if k != seed_key))
        groups[key].append(job)
    settings = [Setting(dict(k), v) for k, v in sorted(groups.items())]
    if select_metric:
        for s in settings:
            for job in s.jobs:
                v = best_validation(job.path, select_metric, job.metrics)
                if math.isfinite(v):
                    s.selection[job.overrides.get(seed_key, job.path.name)] = v
    return settings


def _label(setting: Setting, varying: Sequence[str]) -> str:
    """`num_iters=2, pool_mode=roi_align`: the varied overrides by short key (the CSV
    keeps the full override columns)."""
    return setting_label({k: setting.overrides.get(k, "") for k in varying}, varying)


def is_reference(setting: Setting, reference: dict[str, str]) -> bool:
    o = setting.overrides
    return not setting.baseline and all(o.get(k) == v for k, v in reference.items())


def _fmt(values: Sequence[float], n_jobs: int, scale: float, digits: int) -> str:
    if not values:
        return f"n/a (n=0/{n_jobs})"
    text = f"{mean(values) * scale:.{digits}f}"
    if len(values) > 1:
        text += f" ± {stdev(values) * scale:.{digits}f}"
    return text if len(values) == n_jobs else f"{text} (n={len(values)}/{n_jobs})"


def _fmt_paired(pr: Paired, p_holm: float, scale: float, digits: int) -> str:
    if pr.n == 0:
        return "n/a"
    text = f"{pr.mean * scale:+.{digits}f}"
    if pr.n > 1:
        text += f" ± {pr.std * scale:.{digits}f}"
    if math.isnan(pr.p):
        return f"{text} (n={pr.n}, p=n/a)"
    star = " **" if p_holm < ALPHA else ""
    return f"{text} (n={pr.n}, p={pr.p:.3f}, Holm {p_holm:.3f}){star}"


def _significance_line(ps: Sequence[float], adj: Sequence[float]) -> str:
    defined = [p for p in ps if not math.isnan(p)]
    raw = sum(p < ALPHA for p in defined)
    after = sum(p < ALPHA for p in adj if not math.isnan(p))
    return (f"{len(defined)} tests; {raw} with p < {ALPHA} before correction "
            f"(~{ALPHA * len(defined):.1f} expected by chance), {after} after Holm's correction "
            "(marked **).")


def _paired_table(
    rows_of: Sequence[tuple[Setting, list[Paired]]], varying: Sequence[str], short: Sequence[str],
    scale: float, digits: int,
) -> tuple[list[str], list[list[float]]]:
    """Markdown lines of one family of paired tests and its Holm-adjusted p-values."""
    flat = [pr.p for _, prs in rows_of for pr in prs]
    adj_flat = holm(flat)
    adj, i = [], 0
    for _, prs in rows_of:
        adj.append(adj_flat[i:i + len(prs)])
        i += len(prs)
    md = ["| " + " | ".join(["setting", *short]) + " |", "|" + "---|" * (1 + len(short))]
    for (s, prs), a in zip(rows_of, adj):
        cells = [_label(s, varying)]
        cells += [_fmt_paired(pr, pa, scale, digits) for pr, pa in zip(prs, a)]
        md.append("| " + " | ".join(cells) + " |")
    md += ["", _significance_line(flat, adj_flat)]
    return md, adj


def build_report(
    settings: Sequence[Setting],
    metrics: Sequence[str],
    reference: dict[str, str],
    seed_key: str = "seed",
    scale: float = 100.0,
    digits: int = 2,
    select_metric: str = "",
) -> tuple[str, list[dict[str, Any]]]:
    """(markdown, csv rows) for the grouped settings."""
    keys = sorted({k for s in settings for k in s.overrides})
    varying = [k for k in keys if len({s.overrides.get(k, "") for s in settings}) > 1] or keys
    refs = [s for s in settings if is_reference(s, reference)]
    ref = refs[0] if len(refs) == 1 else None
    ref_shared = ref is not None and len(ref.jobs) == 1
    short = [m.removeprefix("test/") for m in metrics]
    sel_head = [f"best {select_metric}"] if select_metric else []

    head = ["setting", "n", "trainable params", *sel_head, *short]
    md = ["## Mean ± std over seeds", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    rows: list[dict[str, Any]] = []
    vs_ref: list[tuple[Setting, list[Paired]]] = []
    for s in settings:
        params = [j.metrics[PARAMS_KEY] for j in s.jobs if PARAMS_KEY in j.metrics]
        row: dict[str, Any] = {k: s.overrides.get(k, "") for k in keys}
        row["n"] = len(s.jobs)
        row["trainable_params"] = int(mean(params)) if params else math.nan
        cells = [_label(s, varying), str(len(s.jobs)),
                 f"{int(mean(params)):,}" if params else "n/a"]
        if select_metric:
            cells.append(_fmt(list(s.selection.values()), len(s.jobs), scale, digits))
            row["selection_mean"] = mean(s.selection.values()) if s.selection else math.nan
        prs = []
        for m in metrics:
            vals = s.values(m, seed_key)
            cells.append(_fmt(list(vals.values()), len(s.jobs), scale, digits))
            row[f"{m}_mean"] = mean(vals.values()) if vals else math.nan
            row[f"{m}_std"] = stdev(vals.values()) if len(vals) > 1 else math.nan
            row[f"{m}_n"] = len(vals)
            pr = (paired_test(vals, ref.values(m, seed_key), ref_shared)
                  if ref is not None and s is not ref else NO_PAIRS)
            prs.append(pr)
            row.update({f"{m}_diff_mean": pr.mean, f"{m}_diff_std": pr.std,
                        f"{m}_diff_n": pr.n, f"{m}_t": pr.t, f"{m}_p": pr.p})
        if ref is not None and s is not ref:
            vs_ref.append((s, prs))
        md.append("| " + " | ".join(cells) + " |")
        rows.append(row)

    shared = [f"`{k}={settings[0].overrides[k]}`" for k in keys if k not in varying
              and all(k in s.overrides for s in settings)]
    if shared:
        md += ["", "Shared overrides: " + " ".join(shared)]
    if varying:
        md += ["", "Setting: the overrides that vary between rows, each by its shortest "
               f"unambiguous key suffix ({', '.join(f'`{k}`' for k in varying)})."]
    md += ["", f"Values ×{scale:g}; `(n=k/N)`: only k of the N jobs have a value (others NaN).",
           "", "## Paired difference to the reference (same seed)", ""]
    ref_text = " ".join(f"`{k}={v}`" for k, v in reference.items())
    cell_text = ("Cells: mean difference ± std of the per-seed differences, number of pairs, "
                 "two-sided paired t-test p-value and its Holm-adjusted value over the table.")
    if ref is None:
        md.append(f"No unique reference setting ({ref_text}, no baseline): found {len(refs)}; "
                  "paired tests skipped.")
    else:
        md.append(f"Reference: {ref_text} (no baseline), {len(ref.jobs)} job(s)"
                  + ("; a single job, seed-independent, paired with every seed." if ref_shared
                     else "; paired by seed."))
        table, adj = _paired_table(vs_ref, varying, short, scale, digits)
        md += [cell_text, "", *table]
        by_row = {id(s): a for (s, _), a in zip(vs_ref, adj)}
        for s, row in zip(settings, rows):
            for m, pa in zip(metrics, by_row.get(id(s), [math.nan] * len(metrics))):
                row[f"{m}_p_holm"] = pa
    md += _head_to_head(settings, rows, metrics, varying, short, seed_key, scale, digits,
                        select_metric, ref)
    return "\n".join(md) + "\n", rows


def _head_to_head(settings, rows, metrics, varying, short, seed_key, scale, digits,
                  select_metric, ref) -> list[str]:
    baselines = [s for s in settings if s.baseline and s.selection]
    if not select_metric or not baselines:
        return []
    best = max(baselines, key=lambda s: mean(s.selection.values()))
    md = ["", "## Head to head against the best baseline (same seed)", "",
          f"Best baseline on `val` (highest mean best `{select_metric}`): `{best.baseline}` "
          f"({mean(best.selection.values()) * scale:.{digits}f}). Cells: setting − that "
          "baseline, paired by seed; Holm over this table.", ""]
    others = [s for s in settings if not s.baseline and s is not ref]
    fam = [(s, [paired_test(s.values(m, seed_key), best.values(m, seed_key), False)
                for m in metrics]) for s in others]
    table, adj = _paired_table(fam, varying, short, scale, digits)
    by_row = {id(s): (prs, a) for (s, prs), a in zip(fam, adj)}
    for s, row in zip(settings, rows):
        if id(s) in by_row:
            for m, pr, pa in zip(metrics, *by_row[id(s)]):
                row.update({f"{m}_vs_best_baseline_mean": pr.mean,
                            f"{m}_vs_best_baseline_p": pr.p,
                            f"{m}_vs_best_baseline_p_holm": pa})
    return md + table


def tuning_table(trials: Sequence[Job], select_metric: str, scale: float, digits: int) -> str:
    """Method x learning rate -> the value the sweeper optimised (the trial's final
    `select_metric`, what `train.py` returns) and, in brackets, its best over the validations;
    bold: the lr the sweeper picked (`optimization_results.yaml` beside the trials; without it,
    the highest final value)."""
    import yaml

    methods: dict[str, dict[float, tuple[float, float]]] = defaultdict(dict)
    picked: dict[str, float] = {}
    for job in trials:
        o = job.overrides
        name = o.get(BASELINE_KEY, "") if o.get(BASELINE_KEY, "") not in NO_BASELINE else (
            f"region head (T={o.get('model.region_head.num_iters', '?')})")
        lr = float(o.get(LR_KEY, "nan"))
        methods[name][lr] = (job.metrics.get(select_metric, math.nan),
                             best_validation(job.path, select_metric, job.metrics))
        results = job.path.parent / "optimization_results.yaml"
        if results.is_file():
            picked[name] = float(yaml.safe_load(results.read_text())["best_params"][LR_KEY])
    lrs = sorted({lr for v in methods.values() for lr in v})
    md = ["## Learning-rate tuning (on `val`, tuning seed)", "",
          f"`{select_metric}` ×{scale:g} at the trial's last validation and, in brackets, the "
          "best of its validations (the tested checkpoint's: what `train.py` hands the sweeper "
          "since 2026-12-04; trials run before maximised the last value); bold: the lr the "
          "sweeper picked, used for the method's seeds below.", "",
          "| method | " + " | ".join(f"lr {lr:g}" for lr in lrs) + " |",
          "|---|" + "---|" * len(lrs)]
    for name, vals in sorted(methods.items()):
        finite = {lr: v for lr, (v, _) in vals.items() if math.isfinite(v)}
        best_lr = picked.get(name, max(finite, key=finite.get) if finite else math.nan)
        cells = []
        for lr in lrs:
            last, best = vals.get(lr, (math.nan, math.nan))
            text = "n/a" if math.isnan(last) else f"{last * scale:.{digits}f}"
            if not math.isnan(best):
                text += f" ({best * scale:.{digits}f})"
            cells.append(f"**{text}**" if lr == best_lr else text)
        md.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(md) + "\n"


def write_report(root: Path, out: Path, metrics: Sequence[str], reference: dict[str, str],
                 seed_key: str = "seed", scale: float = 100.0, digits: int = 2,
                 metrics_file: str = "metrics.json", notes: str = "",
                 select_metric: str = "") -> tuple[Path, Path]:
    """Write `<out>.md` / `<out>.csv`; `notes` (markdown: protocol, reading) goes under the
    title, so the committed report carries its own interpretation."""
    jobs, missing = find_jobs(root, metrics_file)
    for job_dir in missing:
        print(f"warning: no {metrics_file} in {job_dir}; skipped", file=sys.stderr)
    trials = [j for j in jobs if TUNING_KEY in j.overrides]
    points = [j for j in jobs if TUNING_KEY not in j.overrides]
    if not points:
        raise FileNotFoundError(f"no ablation job with {metrics_file!r} under {root}")
    md, rows = build_report(group_settings(points, seed_key, select_metric), metrics, reference,
                            seed_key, scale, digits, select_metric)
    head = f"# Closed-loop ablation: `{root}`\n\n" + (notes.strip() + "\n\n" if notes else "")
    if any(f"{metrics[0]}_p_holm" in r for r in rows):  # a reference was found
        figure = paired_figure(rows, metrics, out.with_suffix(".png"), scale)
        head += ("## Paired differences to the reference at a glance\n\n"
                 f"![paired differences]({figure.name})\n\nBars: mean ± std of the per-seed "
                 f"differences (×{scale:g}); `*`: Holm-adjusted p < {ALPHA} (the table "
                 "below).\n\n")
    if trials and select_metric:
        md = tuning_table(trials, select_metric, scale, digits) + "\n" + md
    return write_md_csv(out, head + md, rows)


def paired_figure(rows: Sequence[dict[str, Any]], metrics: Sequence[str], path: Path,
                  scale: float = 100.0) -> Path:
    """`path` (png): one panel of paired differences to the reference per metric."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plot_paired_grid(rows, metrics, scale=scale)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("root", type=Path, help="multirun directory (any level above the job dirs)")
    p.add_argument("--out", type=Path, default=Path("results/ablation"))
    p.add_argument("--metrics", default=",".join(DEFAULT_METRICS))
    p.add_argument("--reference", default="model.region_head.num_iters=0",
                   help="comma-separated key=value overrides of the reference setting")
    p.add_argument("--select-metric", default="val/mask/AP",
                   help="validation metric that chose each job's checkpoint (and the best "
                        "baseline); '' to skip the selection column and the head to head")
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
                                     args.metrics_file, notes, args.select_metric)
    print(md_path.read_text())
    print(f"wrote {md_path} and {csv_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
