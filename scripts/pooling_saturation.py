#!/usr/bin/env python
"""How different are the pooling variants' weights on the masks a trained head really pools?

Loads a job's tested checkpoint (``<job>/checkpoints/*.ckpt`` besides ``last.ckpt``), runs it on
``--images`` images of a split and, at every refinement iteration, measures on the
masks M it is handed (fp32, each region's weights normalised to sum 1):

* the share of pixels with an uncertain probability (``lo < sigmoid(M) < hi``);
* the share of soft pooling mass outside ``sigmoid(M) > threshold``;
* the total-variation distance between the soft weights and those of ``sharpened`` /
  ``thresholded`` / ``box_normalised`` (0: the same pooled token; 1: disjoint supports).

Issue 22 found the three variants equal to soft pooling to 0.015 points on every metric; this
says why on a given base (saturated masks leave nothing to sharpen).

Usage::

    REGION_SAM3_DATA=~/runs/data python scripts/pooling_saturation.py \
        ~/runs/ablation/T/3 --split test --images 8
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from statistics import mean
from typing import Any

import torch

import region_sam3.models.pooling as pooling
import region_sam3.models.region_head as region_head

sys.path.insert(0, str(Path(__file__).resolve().parent))
from aggregate_multirun import tested_checkpoint  # noqa: E402

COMPARED = ("sharpened", "thresholded", "box_normalised")
_REGION_POOL = region_head.region_pool  # the real one: measure() swaps the head's for a spy


def weight_divergence(logits: torch.Tensor, tau: float = 0.25, threshold: float = 0.5,
                      band: tuple[float, float] = (0.05, 0.95)) -> dict[str, float]:
    """Saturation and soft-vs-variant distances of one batch of masks.

    Args:
        logits: [B,Q,H,W] mask logits M.

    Returns:
        ``uncertain`` (share of pixels in ``band``), ``soft_outside_fg`` (soft mass outside
        ``sigmoid(M) > threshold``, mean over regions) and ``tv_<mode>`` for each mode of
        ``COMPARED`` (mean over regions of ½·Σ|w_soft − w_mode|).
    """
    logits = logits.float()
    prob = logits.sigmoid()

    def normalised(mode: str) -> torch.Tensor:  # [B,Q,HW]
        w = pooling.pooling_weights(logits, mode, tau, threshold).flatten(2)
        return w / w.sum(-1, keepdim=True).clamp_min(1e-12)

    soft = normalised("soft")
    fg = (prob > threshold).flatten(2)
    out = {"uncertain": ((prob > band[0]) & (prob < band[1])).float().mean().item(),
           "soft_outside_fg": (soft * ~fg).sum(-1).mean().item()}
    for mode in COMPARED:
        out[f"tv_{mode}"] = 0.5 * (soft - normalised(mode)).abs().sum(-1).mean().item()
    return out


def measure(job: Path, split: str, images: int) -> tuple[dict[str, float], int]:
    """Mean of :func:`weight_divergence` over the masks of every refinement iteration on
    `images` images of `split` (each image prompted with its most frequent category), and the
    number of mask batches measured.

    The region head's calls to ``region_pool`` are intercepted (every pooling mode, soft and
    RoIAlign included), once per iteration however many feature sources it pools, with the
    ``tau`` / ``threshold`` the head passes. Measured on the masks' own grid; ``mask_pool``
    pools after resizing them to each feature grid, which only averages neighbouring weights.
    """
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from region_sam3.predict import Sam3Predictor
    from region_sam3.reporting.overlays import split_samples

    cfg = OmegaConf.load(job / ".hydra" / "config.yaml")
    predictor = Sam3Predictor.from_lightning_checkpoint(tested_checkpoint(job), device="cpu")
    samples = split_samples(*instantiate(cfg.data).split_paths(split), images, with_masks=True)
    calls: list[dict[str, float]] = []
    last_masks: torch.Tensor | None = None  # one iteration pools the same masks per source

    def spy(logits: torch.Tensor, feats: torch.Tensor, mode: str = "soft", tau: float = 0.25,
            threshold: float = 0.5, *args: Any, **kwargs: Any) -> torch.Tensor:
        nonlocal last_masks
        if logits is not last_masks:
            last_masks = logits
            calls.append(weight_divergence(logits, tau, threshold))
        return _REGION_POOL(logits, feats, mode, tau, threshold, *args, **kwargs)

    region_head.region_pool = spy
    try:
        with torch.no_grad():
            for sample in samples:
                predictor.predict(sample.image, sample.prompt, 0.0)
    finally:
        region_head.region_pool = _REGION_POOL
    if not calls:
        raise RuntimeError(f"{job}: the region head never pooled (model.region_head.num_iters="
                           f"{cfg.model.region_head.get('num_iters')!r}, or no region head)")
    return {k: mean(c[k] for c in calls) for k in calls[0]}, len(calls)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("job", type=Path, help="a finished train.py job dir (with checkpoints/)")
    p.add_argument("--split", default="test")
    p.add_argument("--images", type=int, default=8)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    stats, n = measure(args.job, args.split, args.images)
    print(f"{args.job} on {args.images} `{args.split}` images, {n} mask batches "
          "(one per refinement iteration and image):")
    for key, value in stats.items():
        print(f"  {key}: {value:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
