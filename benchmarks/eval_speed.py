#!/usr/bin/env python
"""Time the evaluation suite on synthetic queries (CPU).

For each resolution, N find queries with ``--gts`` GT rectangles each and ``--preds`` predicted
logit maps (jittered copies of the GT plus random false positives) are pushed through
``process`` and ``evaluate`` of: COCO mask AP, Boundary AP and matched mIoU. Data generation is
excluded from the timings. Run::

    PYTHONPATH=. python benchmarks/eval_speed.py --n 500 --sizes 224 1008
"""

from __future__ import annotations

import argparse
import time

import torch

from region_sam3.eval import (
    BoundaryAPEvaluator,
    COCOMaskEvaluator,
    MatchedIoUEvaluator,
    QueryPrediction,
    QueryTarget,
)


def make_query(i: int, size: int, n_gt: int, n_pred: int, g: torch.Generator):
    """One synthetic query: ``n_gt`` rectangles, predictions = shifted GT + false positives."""
    gt = torch.zeros(n_gt, size, size, dtype=torch.bool)
    boxes = []
    for j in range(n_gt):
        s = int(size * (0.05 + 0.3 * torch.rand(1, generator=g).item()))
        y, x = torch.randint(0, size - s, (2,), generator=g).tolist()
        gt[j, y : y + s, x : x + s] = True
        boxes.append((y, x, s))
    logits = torch.full((n_pred, size, size), -4.0)
    for k in range(n_pred):
        y, x, s = boxes[k % n_gt]
        if k >= n_gt:  # false positive somewhere else
            y, x = torch.randint(0, size - s, (2,), generator=g).tolist()
        dy, dx = torch.randint(-s // 8 - 1, s // 8 + 2, (2,), generator=g).tolist()
        y0, x0 = max(0, y + dy), max(0, x + dx)
        logits[k, y0 : y + dy + s, x0 : x + dx + s] = 4.0
    scores = torch.rand(n_pred, generator=g)
    scores[:n_gt] += 0.5  # true positives mostly ranked first
    pred = QueryPrediction(masks=logits, scores=scores.clamp(max=1.0))
    return pred, QueryTarget(image_id=i // 2, category_id=i % 2, masks=gt)


def bench(size: int, n: int, n_gt: int, n_pred: int, chunk: int = 25) -> dict[str, float]:
    g = torch.Generator().manual_seed(0)
    evs = {
        "mask AP": COCOMaskEvaluator(),
        "boundary AP": BoundaryAPEvaluator(),
        "mIoU": MatchedIoUEvaluator(),
    }
    t_proc = dict.fromkeys(evs, 0.0)
    t_bin = 0.0
    for start in range(0, n, chunk):  # generate in chunks to bound memory at 1008^2
        batch = [make_query(i, size, n_gt, n_pred, g) for i in range(start, min(n, start + chunk))]
        preds, targets = [b[0] for b in batch], [b[1] for b in batch]
        t = time.perf_counter()
        for p in preds:  # shared by all evaluators (cached on the prediction)
            p.binary_masks()
        t_bin += time.perf_counter() - t
        for name, ev in evs.items():
            t = time.perf_counter()
            ev.process(preds, targets)
            t_proc[name] += time.perf_counter() - t
    out = {"binarize": t_bin}
    for name, ev in evs.items():
        t = time.perf_counter()
        metrics = ev.evaluate()
        out[f"{name} process"] = t_proc[name]
        out[f"{name} evaluate"] = time.perf_counter() - t
        key = next(iter(metrics))
        out[f"{name} value ({key})"] = metrics[key]
    out["total"] = t_bin + sum(v for k, v in out.items() if k.endswith(("process", "evaluate")))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=500)
    p.add_argument("--sizes", type=int, nargs="+", default=[224, 1008])
    p.add_argument("--gts", type=int, default=3)
    p.add_argument("--preds", type=int, default=10)
    p.add_argument("--threads", type=int, default=1, help="torch threads (0 = torch default)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"N={args.n} queries, {args.gts} GT + {args.preds} predictions each, "
        f"torch threads={torch.get_num_threads()}"
    )
    for size in args.sizes:
        res = bench(size, args.n, args.gts, args.preds)
        print(f"\n## {size}x{size}")
        for k, v in res.items():
            unit = "" if "value" in k else " s"
            print(f"  {k:28s} {v:8.3f}{unit}")


if __name__ == "__main__":
    main()
