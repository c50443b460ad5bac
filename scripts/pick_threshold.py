"""Pick the score threshold of the README's quickstart command for a model on a synthetic split.

For every image of the split, every category present is prompted plus `--negatives` absent
ones; detections are matched greedily (by score) to the prompt's ground-truth masks at mask
IoU >= 0.5. The printed table gives precision / recall / F1 per threshold; the chosen value
is the F1-maximising one.

    python scripts/pick_threshold.py --model tiny_base --split val
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from region_sam3.data.synthetic import SyntheticConfig, render_scene
from region_sam3.predict import Sam3Predictor


def match(masks: torch.Tensor, gt: np.ndarray, iou: float = 0.5) -> np.ndarray:
    """`[N]` bool: detection i (in score order) is a true positive."""
    tp = np.zeros(len(masks), bool)
    if not len(masks) or not len(gt):
        return tp
    d = masks.flatten(1).float()
    g = torch.from_numpy(gt).flatten(1).float()
    inter = d @ g.T
    union = d.sum(1, keepdim=True) + g.sum(1) - inter
    ious = (inter / union.clamp(min=1)).numpy()
    free = np.ones(len(gt), bool)
    for i in range(len(masks)):
        j = int(np.argmax(np.where(free, ious[i], -1)))
        if free[j] and ious[i, j] >= iou:
            tp[i], free[j] = True, False
    return tp


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny_base")
    parser.add_argument("--split", default="val")
    parser.add_argument("--negatives", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    cfg = SyntheticConfig()
    names = [c["name"] for c in cfg.categories()]
    predictor = Sam3Predictor.from_config(args.model, device="cpu")
    rng = np.random.default_rng(args.seed)
    scores, hits, num_gt = [], [], 0
    for index in range(cfg.splits[args.split].num_images):
        scene = render_scene(cfg, args.split, index)
        present = sorted(set(scene.category_ids))
        absent = [c for c in range(1, len(names) + 1) if c not in present]
        prompted = present + list(rng.choice(absent, args.negatives, replace=False))
        preds = predictor.predict_prompts(scene.image, [names[c - 1] for c in prompted], 0.0)
        for cat, pred in zip(prompted, preds):
            gt = scene.masks[[c == cat for c in scene.category_ids]]
            num_gt += len(gt)
            scores.append(pred.scores.numpy())
            hits.append(match(pred.masks, gt))
    scores, hits = np.concatenate(scores), np.concatenate(hits)
    best = (0.0, 0.0)
    print("threshold  precision  recall  F1  detections/image")
    for thr in np.arange(0.05, 0.96, 0.05):
        keep = scores > thr
        tp = int(hits[keep].sum())
        precision = tp / max(int(keep.sum()), 1)
        recall = tp / max(num_gt, 1)
        f1 = 2 * precision * recall / max(precision + recall, 1e-12)
        per_image = keep.sum() / cfg.splits[args.split].num_images
        print(f"{thr:.2f}  {precision:.3f}  {recall:.3f}  {f1:.3f}  {per_image:.1f}")
        best = max(best, (f1, round(float(thr), 2)))
    print(f"best F1 {best[0]:.3f} at threshold {best[1]}")


if __name__ == "__main__":
    main()
