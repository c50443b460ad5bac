#!/usr/bin/env python
"""How different are the pooling variants' weights on the masks a trained head really pools?

Loads a job's tested checkpoint (``<job>/checkpoints/*.ckpt`` besides ``last.ckpt``), runs it on
``--images`` images of a split and, at every call of the mask-based pooling, measures on the
masks M it is handed (fp32, each region's weights normalised to sum 1):

* the share of pixels with an uncertain probability (``lo < sigmoid(M) < hi``);
* the share of soft pooling mass outside ``sigmoid(M) > threshold``;
* the total-variation distance between the soft weights and those of ``sharpened`` /
  ``thresholded`` / ``box_normalised`` (0: the same pooled token; 1: disjoint supports).

Issue 22 found the three variants equal to soft pooling to 0.02 points on every metric; this
says why on a given base (saturated masks leave nothing to sharpen).

Usage::

    REGION_SAM3_DATA=~/runs/data python scripts/pooling_saturation.py \
        ~/runs/ablation/pooling/sharpened/0 --split test --images 8
"""

from __future__ import annotations

import argparse
from pathlib import Path
from statistics import mean

import torch

import region_sam3.models.pooling as pooling

COMPARED = ("sharpened", "thresholded", "box_normalised")
_WEIGHTS = pooling.pooling_weights  # the real one: measure() swaps the module's for a spy


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
        w = _WEIGHTS(logits, mode, tau, threshold).flatten(2)
        return w / w.sum(-1, keepdim=True).clamp_min(1e-12)

    soft = normalised("soft")
    fg = (prob > threshold).flatten(2)
    out = {"uncertain": ((prob > band[0]) & (prob < band[1])).float().mean().item(),
           "soft_outside_fg": (soft * ~fg).sum(-1).mean().item()}
    for mode in COMPARED:
        out[f"tv_{mode}"] = 0.5 * (soft - normalised(mode)).abs().sum(-1).mean().item()
    return out


def measure(job: Path, split: str, images: int) -> tuple[dict[str, float], int]:
    """Mean of :func:`weight_divergence` over every pooling call on `images` images of
    `split` (each image prompted with its most frequent category), and the number of calls."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from region_sam3.predict import Sam3Predictor
    from region_sam3.reporting.overlays import split_samples

    ckpts = sorted(p for p in (job / "checkpoints").glob("*.ckpt") if p.name != "last.ckpt")
    if len(ckpts) != 1:
        raise FileNotFoundError(f"{job}/checkpoints: expected one best-on-val checkpoint besides "
                                f"last.ckpt, found {[p.name for p in ckpts]}")
    cfg = OmegaConf.load(job / ".hydra" / "config.yaml")
    head = cfg.model.region_head
    predictor = Sam3Predictor.from_lightning_checkpoint(ckpts[0], device="cpu")
    samples = split_samples(*instantiate(cfg.data).split_paths(split), images, with_masks=True)
    calls: list[dict[str, float]] = []
    def spy(logits, mode="soft", tau=0.25, threshold=0.5):
        with torch.no_grad():
            calls.append(weight_divergence(logits, head.get("pool_tau", tau),
                                           head.get("pool_threshold", threshold)))
        return _WEIGHTS(logits, mode, tau, threshold)

    pooling.pooling_weights = spy
    try:
        with torch.no_grad():
            for sample in samples:
                predictor.predict(sample.image, sample.prompt, 0.0)
    finally:
        pooling.pooling_weights = _WEIGHTS
    if not calls:
        raise RuntimeError(f"{job}: no mask-based pooling call (pool_mode="
                           f"{head.get('pool_mode')!r}? RoIAlign does not pool masks)")
    return {k: mean(c[k] for c in calls) for k in calls[0]}, len(calls)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("job", type=Path, help="a finished train.py job dir (with checkpoints/)")
    p.add_argument("--split", default="test")
    p.add_argument("--images", type=int, default=8)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    stats, n = measure(args.job, args.split, args.images)
    print(f"{args.job} on {args.images} `{args.split}` images, {n} pooling calls:")
    for key, value in stats.items():
        print(f"  {key}: {value:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
