#!/usr/bin/env python
"""Where the closed loop helps and hurts (issue 22, item 4), from a finished ablation root.

1. **Per-iteration curves**: the T-sweep jobs (``<root>/T``, run with
   ``model.evaluation.per_iteration=true``) log every iterate ``test/<split>/iter{t}/...``;
   this plots mean ± std over seeds of mask AP, AP_S, boundary AP and top-K mIoU against t,
   one line per trained T, one column per held-out split, and writes the table.
2. **Helped / hurt instances**: the T-sweep job with the largest T and the best validation
   value (``--select-metric``, never a test metric) is loaded from its tested checkpoint; on
   ``--images`` images of each split the best IoU of every ground-truth instance is compared
   between M^0 and M^T on the same kept detections (``workflow.refinement``), summarised
   (helped / hurt by more than ``--eps``) and the most helped and hurt scenes drawn M^0..M^T.

Usage::

    REGION_SAM3_DATA=~/runs/data python scripts/refinement_analysis.py ~/runs/ablation \
        --out results/refinement
"""

from __future__ import annotations

import argparse
import math
import sys
from collections import Counter, defaultdict
from pathlib import Path
from statistics import mean, stdev

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ablation_stats import best_validation  # noqa: E402
from aggregate_multirun import Job, find_jobs, tested_checkpoint  # noqa: E402

from region_sam3.reporting.markdown import CURVES  # noqa: E402

SPLITS = ("test", "test_small", "test_crowded", "ood", "ood_touching")
T_KEY = "model.region_head.num_iters"


def iteration_values(jobs: list[Job], split: str, key: str) -> dict[int, dict[int, list[float]]]:
    """{trained T: {t: [value per seed]}} of `test/<split>/iter{t}/<key>` (finite only)."""
    out: dict[int, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for job in jobs:
        big_t = int(job.overrides[T_KEY])
        for t in range(big_t + 1):
            v = job.metrics.get(f"test/{split}/iter{t}/{key}", math.nan)
            if math.isfinite(v) and v != -1.0:
                out[big_t][t].append(v)
    return out


def curves(jobs: list[Job], splits: list[str], out: Path) -> str:
    """Plot the per-iteration curves to `<out>/iteration_curves.png`; markdown table back."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(CURVES), len(splits), figsize=(3.0 * len(splits), 2.4 * len(CURVES)),
                             squeeze=False, sharex=True)
    width = 1 + max(int(j.overrides[T_KEY]) for j in jobs)  # columns t=0..max trained T
    seeds = Counter(int(j.overrides[T_KEY]) for j in jobs)  # {trained T: jobs}
    md = ["| split | metric | trained T | " + " | ".join(f"t={t}" for t in range(width)) + " |",
          "|---|---|---|" + "---|" * width]
    for j, split in enumerate(splits):
        for i, (title, key) in enumerate(CURVES):
            ax = axes[i][j]
            for big_t, per_t in sorted(iteration_values(jobs, split, key).items()):
                ts = sorted(per_t)
                mu = [mean(per_t[t]) * 100 for t in ts]
                sd = [stdev(per_t[t]) * 100 if len(per_t[t]) > 1 else 0.0 for t in ts]
                ax.errorbar(ts, mu, yerr=sd, marker="o", capsize=3, label=f"T={big_t}")
                # an iterate with no finite value stays an empty cell in its own column
                # and one with fewer seeds than the T has jobs says how many it has
                n = seeds[big_t]
                by_t = {t: f"{m:.2f} ± {s:.2f}" + ("" if len(per_t[t]) == n else
                                                   f" (n={len(per_t[t])})")
                        for t, m, s in zip(ts, mu, sd)}
                cells = [by_t.get(t, "") for t in range(width)]
                md.append(f"| {split} | {key} | {big_t} (n={n}) | " + " | ".join(cells) + " |")
            if i == 0:
                ax.set_title(split, fontsize=10)
            if j == 0:
                ax.set_ylabel(f"{title} ×100", fontsize=9)
            if i == len(CURVES) - 1:
                ax.set_xlabel("iteration t")
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(out / "iteration_curves.png", dpi=100)
    plt.close(fig)
    return "\n".join(md) + "\n"


def pick_job(jobs: list[Job], select_metric: str) -> Job:
    top_t = max(int(j.overrides[T_KEY]) for j in jobs)
    pool = [j for j in jobs if int(j.overrides[T_KEY]) == top_t]
    return max(pool, key=lambda j: best_validation(j.path, select_metric, j.metrics))


def examples(job: Job, splits: list[str], out: Path, images: int, eps: float, k: int,
             score_threshold: float) -> str:
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from region_sam3.predict import Sam3Predictor
    from region_sam3.reporting.overlays import split_samples, stack_vertically
    from region_sam3.workflow.refinement import (
        changes_markdown,
        extreme_samples,
        instance_panel,
        refinement_changes,
        summarize_changes,
    )

    ckpt = tested_checkpoint(job.path)
    cfg = OmegaConf.load(job.path / ".hydra" / "config.yaml")
    dm = instantiate(cfg.data)
    predictor = Sam3Predictor.from_lightning_checkpoint(ckpt, device="cpu")
    md = [f"Checkpoint: `{ckpt.relative_to(job.path.parent.parent)}` (overrides "
          f"{' '.join(f'`{k}={v}`' for k, v in sorted(job.overrides.items()))}); "
          f"{images} images per split, the prompt of each image is its most frequent category; "
          f"detections kept above score {score_threshold}; helped / hurt: IoU change beyond ±{eps}.",
          "", "| split | instances | helped | hurt | unchanged | mean IoU change |",
          "|---|---|---|---|---|---|"]
    detail = []
    for split in splits:
        samples = split_samples(*dm.split_paths(split), images, with_masks=True)
        rows = refinement_changes(predictor, samples, score_threshold)
        s = summarize_changes(rows, eps)
        md.append(f"| {split} | {s.n} | {s.helped} | {s.hurt} | {s.unchanged} | "
                  + ("n/a" if math.isnan(s.mean_delta) else f"{s.mean_delta:+.4f}") + " |")
        detail += [f"### {split}", "", changes_markdown(rows, k)]
        helped, hurt = extreme_samples(rows, samples, k)
        panels = [instance_panel(predictor, smp, r, score_threshold) for smp, r in helped + hurt]
        if panels:
            stack_vertically(panels).save(out / f"examples_{split}.png")
            detail += [f"Rows: the {len(helped)} most helped, then the {len(hurt)} most hurt "
                       "instances (one per image): ground truth in green (outline white in every "
                       "cell), the best-overlapping kept detection at t=0 and t=T in red.", "",
                       f"![{split}](examples_{split}.png)", ""]
    return "\n".join(md) + "\n\n" + "\n".join(detail)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("root", type=Path, help="ablation root (holds T/)")
    p.add_argument("--out", type=Path, default=Path("results/refinement"))
    p.add_argument("--splits", default=",".join(SPLITS))
    p.add_argument("--select-metric", default="val/mask/AP")
    p.add_argument("--images", type=int, default=20, help="images per split for the examples")
    p.add_argument("--eps", type=float, default=0.05)
    p.add_argument("--k", type=int, default=3, help="examples helped / hurt per split")
    p.add_argument("--score-threshold", type=float, default=0.15)
    args = p.parse_args(argv)
    jobs, _ = find_jobs(args.root / "T", "metrics.json")
    if not jobs:
        p.error(f"no finished job under {args.root / 'T'}")
    splits = [s for s in args.splits.split(",") if s]
    args.out.mkdir(parents=True, exist_ok=True)
    table = curves(jobs, splits, args.out)
    job = pick_job(jobs, args.select_metric)
    text = examples(job, splits, args.out, args.images, args.eps, args.k, args.score_threshold)
    report = ("## Per-iteration metrics on the held-out splits (mean ± std over seeds, ×100)\n\n"
              "![curves](iteration_curves.png)\n\n" + table
              + "\n## Instances where refinement helped and hurt\n\n" + text)
    (args.out / "analysis.md").write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
