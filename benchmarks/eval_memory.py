#!/usr/bin/env python
"""Host memory and time of the whole evaluation path at official output shapes (CPU).

Feeds full-size-shaped model outputs -- ``--prompts`` prompts x 200 queries, 288^2 mask logits
(bf16, as SAM3 runs on CUDA), T = 3 refinement iterates (``pred_masks_iter0..2`` distinct,
``iter3`` *is* ``pred_masks``), 640x480 originals -- through post-processing, the per-image
candidate pool (each image's prompts arrive in ``--chunk``-prompt batches), COCO mask AP,
Boundary AP, cgF1, matched mIoU and stability, all per iteration. The logits are smooth random
fields (random 18^2 noise upsampled, so masks are blobs with realistic RLE sizes) and GT are
random rectangles; the outputs of one batch are made before it is handed over and freed after.

Reported: peak host RSS added on top of the outputs being handed (sampled every 5 ms, baseline
= RSS right after the batch's outputs exist) and seconds per image, split into post-processing
(per batch, inside the loop: ``select`` + pool merge + ``finalize``/encode of released images
+ the evaluators' per-image ``process``) and ``evaluate()`` (once, amortised per image).

Old path (``--old``): the pre-issue-10 ``_predictions`` + per-query evaluators (from git
commit ``e7fe887``), which keep the top-100 queries of every prompt resized to the *model*
resolution (1008^2) as float32 on the host, per mask source. That does not fit here at 80
prompts x 4 sources (it needs ~130 GB per image), so it is run on ``--old-prompts`` prompts
with the final masks only and extrapolated linearly (memory and time are both linear in
prompts x sources on that path).

``--baseline COMMIT`` first runs the same loop, on identical data, with ``region_sam3/eval`` as
of ``COMMIT`` (e.g. the commit before an optimisation), prints both and checks every metric is
unchanged. sam3 (imported lazily by cgF1) is imported before timing, as in a real run.

``--profile N`` prints, per run, the N functions with the most own time inside the timed part
(cProfile enabled around it only, not around the data generation).

    PYTHONPATH=. OMP_NUM_THREADS=1 nice -n 10 python benchmarks/eval_memory.py --images 20
    PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/eval_memory.py --images 3 --baseline 4ddd669
"""

from __future__ import annotations

import argparse
import cProfile
import importlib
import inspect
import pstats
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pycocotools.mask as mask_utils
import torch
import torch.nn.functional as F

from region_sam3.eval import types as ev_types

Q, LOW, CANVAS, ORIG, ITERS = 200, 288, 1008, (480, 640), 3


class PeakRSS:
    """Peak RSS above a baseline, sampled by a thread (``reset`` moves the baseline)."""

    def __init__(self) -> None:
        self.proc = psutil.Process()
        self.base = self.proc.memory_info().rss
        self.peak_added = 0
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop:
            self.peak_added = max(self.peak_added, self.proc.memory_info().rss - self.base)
            time.sleep(0.005)

    def rebase(self) -> None:
        """New baseline (e.g. after the next batch's outputs were allocated)."""
        self.base = self.proc.memory_info().rss

    def stop(self) -> int:
        self._stop = True
        self._thread.join()
        return self.peak_added


def smooth_logits(shape: tuple[int, ...], g: torch.Generator) -> torch.Tensor:
    """``[..., 288, 288]`` bf16 logits: random 18^2 fields upsampled (blob-shaped masks)."""
    lead = int(np.prod(shape[:-2]))
    noise = torch.randn(lead, 1, 18, 18, generator=g) * 4 - 1.5
    up = F.interpolate(noise, size=shape[-2:], mode="bilinear", align_corners=False)
    return up.reshape(shape).to(torch.bfloat16)


def make_outputs(prompts: int, g: torch.Generator) -> dict:
    out = {
        "pred_logits": torch.randn(prompts, Q, 1, generator=g).to(torch.bfloat16),
        "presence_logit_dec": torch.randn(prompts, 1, generator=g).to(torch.bfloat16),
        "pred_boxes": (torch.rand(prompts, Q, 4, generator=g) * 0.5 + 0.25),
        "pred_masks": smooth_logits((prompts, Q, LOW, LOW), g),
    }
    for t in range(ITERS):
        out[f"pred_masks_iter{t}"] = smooth_logits((prompts, Q, LOW, LOW), g)
    out[f"pred_masks_iter{ITERS}"] = out["pred_masks"]
    return out


def make_gt(image_id: int, cats: list[int], rng: np.random.Generator, gt_cls=None):
    h, w = ORIG
    anns = []
    for c in cats[:6]:  # 6 positive categories with 1-3 instances, the rest negatives
        for _ in range(rng.integers(1, 4)):
            y, x = rng.integers(0, h - 100), rng.integers(0, w - 100)
            m = np.zeros((h, w), np.uint8, order="F")
            m[y:y + rng.integers(10, 100), x:x + rng.integers(10, 100)] = 1
            r = mask_utils.encode(m)
            r["counts"] = r["counts"].decode()
            anns.append({"id": len(anns) + 1 + 1000 * image_id, "category_id": c,
                         "segmentation": r, "area": float(m.sum()), "iscrowd": 0})
    return (gt_cls or ev_types.ImageGroundTruth)(image_id, h, w, anns, tuple(cats), len(anns))


def run_new(images: int, prompts: int, chunk: int, ev=None,
            prof: cProfile.Profile | None = None) -> dict:
    """The current path, or with ``ev`` the same loop on another ``region_sam3.eval`` package
    (``--baseline``: an older commit's, for a side-by-side before/after on identical data).
    ``prof``: profiler enabled around the timed sections only (not the data generation)."""
    ev = ev or importlib.import_module("region_sam3.eval")
    g, rng = torch.Generator().manual_seed(0), np.random.default_rng(0)
    # Boundary bands made next to the masks where this version of the package can.
    extra = ({"boundary_ratio": 0.02}
             if "boundary_ratio" in inspect.signature(ev.PostProcessor).parameters else {})
    post = ev.PostProcessor(100, **extra)
    pool = ev.DetectionPool(100, post)
    evaluators = ev.build_default_evaluators(crowded_thresholds=(10,))
    meter = PeakRSS()
    t_post = 0.0
    for i in range(images):
        cats = list(range(1, prompts + 1))
        gt = make_gt(i, cats, rng, ev.ImageGroundTruth)
        for start in range(0, prompts, chunk):
            n = min(chunk, prompts - start)
            out = make_outputs(n, g)
            meter.rebase()  # the outputs handed over are not the evaluation's memory
            t0 = time.perf_counter()
            if prof:
                prof.enable()
            layout = ev.BatchLayout(torch.zeros(n, dtype=torch.long),
                                 torch.tensor(cats[start:start + n]), [i], [ORIG],
                                 [(CANVAS, CANVAS)], (CANVAS, CANVAS))
            pool.add(post.select(out, layout, pool.score_floors([i])), [gt])
            evaluators.process(*pool.pop_finished([i]))
            if prof:
                prof.disable()
            t_post += time.perf_counter() - t0
            del out
    meter.rebase()
    t0 = time.perf_counter()
    if prof:
        prof.enable()
    evaluators.process(*pool.flush())
    metrics = evaluators.evaluate()
    if prof:
        prof.disable()
    t_eval = time.perf_counter() - t0
    peak = meter.stop()
    return {"peak_added_mb": peak / 2**20, "post_s_per_image": t_post / images,
            "evaluate_s_per_image": t_eval / images, "num_metrics": len(metrics),
            "mask_AP": metrics["mask/AP"], "dets_per_image": metrics["mask/num_dets"] / images,
            "metrics": metrics}


def load_old_eval(commit: str = "e7fe887", name: str = "old_region_sam3_eval"):
    """``region_sam3.eval`` as of ``commit`` (default: pre-issue-10), imported as ``name``."""
    root = Path(tempfile.mkdtemp()) / name
    root.mkdir()
    repo = Path(__file__).resolve().parent.parent
    names = subprocess.run(["git", "ls-tree", "--name-only", commit, "region_sam3/eval/"],
                           cwd=repo, capture_output=True, text=True, check=True).stdout.split()
    for path in names:
        text = subprocess.run(["git", "show", f"{commit}:{path}"], cwd=repo, capture_output=True,
                              text=True, check=True).stdout
        (root / Path(path).name).write_text(text.replace("region_sam3.eval", name))
    sys.path.insert(0, str(root.parent))
    return importlib.import_module(name)


def run_old(prompts: int) -> dict:
    """Old path on one image with ``prompts`` prompts, final masks only (see docstring)."""
    old = load_old_eval()
    g = torch.Generator().manual_seed(0)
    out = make_outputs(prompts, g)
    for t in range(ITERS + 1):
        out.pop(f"pred_masks_iter{t}")
    gt = torch.zeros(2, CANVAS, CANVAS, dtype=torch.bool)
    gt[0, 100:300, 100:300] = gt[1, 500:700, 400:800] = True
    meter = PeakRSS()
    t0 = time.perf_counter()
    # The old `_predictions` (module.py at e7fe887), final source only.
    scores = out["pred_logits"][..., 0].float().sigmoid() * out["presence_logit_dec"].float().sigmoid()
    top_scores, top_idx = scores.topk(100, dim=1)
    preds, targets = [], []
    for q in range(prompts):
        logits = F.interpolate(out["pred_masks"][q, top_idx[q]][None].float(), size=(CANVAS, CANVAS),
                               mode="bilinear", align_corners=False)[0]
        preds.append(old.QueryPrediction(masks=logits.cpu(), scores=top_scores[q].float()))
        targets.append(old.QueryTarget(image_id=0, category_id=q, masks=gt if q == 0 else gt[:0],
                                       orig_size=ORIG))
    suite = old.build_default_evaluators(crowded_thresholds=(10,))
    suite.process(preds, targets)
    suite.evaluate()
    seconds = time.perf_counter() - t0
    return {"peak_added_mb": meter.stop() / 2**20, "seconds": seconds}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=20)
    p.add_argument("--prompts", type=int, default=80)
    p.add_argument("--chunk", type=int, default=5, help="prompts per evaluation batch")
    p.add_argument("--old", action="store_true", help="also run the old path (extrapolated)")
    p.add_argument("--old-prompts", type=int, default=1)
    p.add_argument("--baseline", metavar="COMMIT", default=None,
                   help="also run the same loop with region_sam3/eval from COMMIT (before/after)")
    p.add_argument("--profile", type=int, default=0, metavar="N",
                   help="print the N costliest functions (own time) of each run's timed part")
    args = p.parse_args()
    torch.set_num_threads(1)
    # CGF1Evaluator imports sam3 lazily; an evaluation run has it imported with the model, so
    # the one-off import (~3 s) is not charged to the first evaluate().
    importlib.import_module("sam3.eval.cgf1_eval")
    print(f"{args.images} images x {args.prompts} prompts x {Q} queries, {LOW}^2 "
          f"logits, T={ITERS}, originals {ORIG[1]}x{ORIG[0]}, {args.chunk} prompts/batch")
    runs, profiles = {}, {}
    if args.baseline:
        label = f"baseline {args.baseline}"
        profiles[label] = cProfile.Profile() if args.profile else None
        runs[label] = run_new(args.images, args.prompts, args.chunk,
                              load_old_eval(args.baseline, "base_eval"), profiles[label])
    profiles["current"] = cProfile.Profile() if args.profile else None
    runs["current"] = new = run_new(args.images, args.prompts, args.chunk,
                                    prof=profiles["current"])
    for label, prof in profiles.items():
        if prof is not None:
            print(f"--- profile of {label} (timed part, {args.images} images) ---")
            pstats.Stats(prof).sort_stats("tottime").print_stats(args.profile)
    for label, r in runs.items():
        per_image = r["post_s_per_image"] + r["evaluate_s_per_image"]
        print(f"{label}: peak added host RSS {r['peak_added_mb']:.0f} MB; {per_image:.2f} s/image "
              f"(post-process {r['post_s_per_image']:.2f}, evaluate "
              f"{r['evaluate_s_per_image']:.2f}); {r['dets_per_image']:.0f} detections/image; "
              f"{r['num_metrics']} metrics")
    if args.baseline:
        base = next(iter(runs.values()))["metrics"]
        cur = new["metrics"]
        same_keys = base.keys() == cur.keys()
        diffs = [abs(base[k] - cur[k]) for k in cur if k in base
                 and not (np.isnan(base[k]) and np.isnan(cur[k]))]
        print(f"metrics vs baseline: same keys {same_keys}; max |diff| "
              f"{max(diffs, default=0.0):.3g} over {len(diffs)} non-NaN values")
    per_image = new["post_s_per_image"] + new["evaluate_s_per_image"]
    if args.old:
        old = run_old(args.old_prompts)
        scale = args.prompts / args.old_prompts * (ITERS + 1)  # prompts x mask sources
        print(f"old path measured: {args.old_prompts} prompt(s), final masks only: "
              f"{old['peak_added_mb']:.0f} MB, {old['seconds']:.2f} s")
        print(f"old path extrapolated to {args.prompts} prompts x {ITERS + 1} sources: "
              f"{old['peak_added_mb'] * scale / 1024:.0f} GB/image, "
              f"{old['seconds'] * scale:.0f} s/image")
        print("| path | peak added RSS | s/image |\n|---|---|---|")
        print(f"| old (extrapolated x{scale:.0f}) | {old['peak_added_mb'] * scale / 1024:.0f} GB"
              f" | {old['seconds'] * scale:.0f} |")
        print(f"| new | {new['peak_added_mb']:.0f} MB | {per_image:.2f} |")


if __name__ == "__main__":
    main()
