"""Where refinement helped and hurt: per-instance IoU of M^0 (SAM3) vs M^T (region head)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from region_sam3.predict import Sam3Predictor
from region_sam3.reporting.overlays import Sample


@dataclass
class InstanceChange:
    """One ground-truth instance: best IoU over the kept detections at t=0 and at t=T."""

    image_id: int
    prompt: str
    instance: int
    iou_first: float
    iou_last: float

    @property
    def delta(self) -> float:
        return self.iou_last - self.iou_first


def iou_matrix(gt: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """`[G,H,W]` x `[N,H,W]` bool -> `[G,N]` pairwise IoU (an empty union counts as 0)."""
    g = gt.flatten(1).float()
    m = masks.flatten(1).float()
    inter = g @ m.T
    union = g.sum(1, keepdim=True) + m.sum(1)[None] - inter
    return inter / union.clamp(min=1)


def best_iou(gt: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """`[G,H,W]` x `[N,H,W]` bool -> `[G]` IoU of each GT with its best-overlapping mask
    (0 when there is no mask)."""
    if masks.shape[0] == 0:
        return torch.zeros(gt.shape[0])
    return iou_matrix(gt, masks).max(dim=1).values


def refinement_changes(predictor: Sam3Predictor, samples: Sequence[Sample],
                       score_threshold: float = 0.3) -> list[InstanceChange]:
    """IoU change per GT instance between the first (M^0) and last (M^T) refinement iterate,
    on the same kept detections. Samples need `gt_masks` (`split_samples(with_masks=True)`)."""
    rows = []
    for sample in samples:
        if sample.gt_masks is None:
            raise ValueError("samples need gt_masks: split_samples(..., with_masks=True)")
        pred = predictor.predict(sample.image, sample.prompt, score_threshold,
                                 return_iterations=True)
        if not pred.iter_mask_logits:
            raise ValueError("the model has no region head: nothing to compare")
        first, last = min(pred.iter_mask_logits), max(pred.iter_mask_logits)
        iou0 = best_iou(sample.gt_masks, pred.iteration_probs(first) > 0.5)
        iou_t = best_iou(sample.gt_masks, pred.iteration_probs(last) > 0.5)
        rows += [InstanceChange(sample.image_id, sample.prompt, i, float(a), float(b))
                 for i, (a, b) in enumerate(zip(iou0, iou_t))]
    return rows


def changes_markdown(rows: Sequence[InstanceChange], k: int = 5) -> str:
    """Markdown: the `k` instances refinement helped most and the `k` it hurt most (strict
    changes only: an unchanged instance is in neither table)."""
    ordered = sorted(rows, key=lambda r: r.delta)
    def table(items):
        lines = ["| image | prompt | instance | IoU t=0 | IoU t=T | change |", "|---|---|---|---|---|---|"]
        lines += [f"| {r.image_id} | {r.prompt} | {r.instance} | {r.iou_first:.3f} | "
                  f"{r.iou_last:.3f} | {r.delta:+.3f} |" for r in items]
        return "\n".join(lines)
    helped = [r for r in ordered[::-1] if r.delta > 0][:k]
    hurt = [r for r in ordered if r.delta < 0][:k]
    return ("**Helped most**\n\n" + (table(helped) if helped else "none (no IoU went up)")
            + "\n\n**Hurt most**\n\n" + (table(hurt) if hurt else "none (no IoU went down)")
            + "\n")


@dataclass
class ChangeSummary:
    """Per-instance IoU changes M^0 -> M^T in counts: `helped` / `hurt` moved by more than
    `eps` up / down; `mean_delta` is NaN without instances."""

    n: int
    helped: int
    hurt: int
    unchanged: int
    mean_delta: float
    eps: float


def summarize_changes(rows: Sequence[InstanceChange], eps: float = 0.05) -> ChangeSummary:
    deltas = [r.delta for r in rows]
    helped = sum(d > eps for d in deltas)
    hurt = sum(d < -eps for d in deltas)
    mean_delta = sum(deltas) / len(deltas) if deltas else float("nan")
    return ChangeSummary(len(deltas), helped, hurt, len(deltas) - helped - hurt, mean_delta, eps)


def extreme_samples(rows: Sequence[InstanceChange], samples: Sequence[Sample], k: int = 3,
                    ) -> tuple[list[tuple[Sample, InstanceChange]], list[tuple[Sample, InstanceChange]]]:
    """The samples holding the `k` most helped and the `k` most hurt instances (one instance per
    image: its largest change of that sign), for `overlay_grid`. Only strict changes count."""
    by_id = {(s.image_id, s.prompt): s for s in samples}

    def pick(ordered: Sequence[InstanceChange], sign: float):
        out, seen = [], set()
        for r in ordered:
            key = (r.image_id, r.prompt)
            if sign * r.delta <= 0 or key in seen or key not in by_id:
                continue
            seen.add(key)
            out.append((by_id[key], r))
            if len(out) == k:
                break
        return out

    ordered = sorted(rows, key=lambda r: r.delta)
    return pick(ordered[::-1], 1.0), pick(ordered, -1.0)


def _tint(rgb: np.ndarray, mask: np.ndarray, color: tuple[int, int, int],
          outline: np.ndarray | None = None) -> np.ndarray:
    """`[H,W,3]` uint8 with `mask` blended towards `color` and the `outline` pixels white."""
    out = rgb.astype(np.float32).copy()
    out[mask] = 0.45 * out[mask] + 0.55 * np.asarray(color, np.float32)
    if outline is not None:
        out[outline] = 255.0
    return out.astype(np.uint8)


def _outline(mask: np.ndarray, width: int = 2) -> np.ndarray:
    """Pixels of `mask` within `width` px of its border (4-neighbour erosion)."""
    inner = mask.copy()
    for _ in range(width):
        shrunk = inner.copy()
        shrunk[1:] &= inner[:-1]
        shrunk[:-1] &= inner[1:]
        shrunk[:, 1:] &= inner[:, :-1]
        shrunk[:, :-1] &= inner[:, 1:]
        inner = shrunk
    return mask & ~inner


def instance_panel(predictor: Sam3Predictor, sample: Sample, change: InstanceChange,
                   score_threshold: float = 0.3, side: int = 160) -> Image.Image:
    """One row for one ground-truth instance: the image with that instance (green), the
    kept detection that overlaps it best at t=0 and at t=T (red), each titled with its IoU;
    the instance's outline is white in every cell.
    Unlike `overlay_grid`, which draws every kept detection, this stays readable when many
    detections pass the threshold."""
    if sample.gt_masks is None:
        raise ValueError("samples need gt_masks: split_samples(..., with_masks=True)")
    pred = predictor.predict(sample.image, sample.prompt, score_threshold, return_iterations=True)
    gt = sample.gt_masks[change.instance]
    rgb = sample.image.permute(1, 2, 0).numpy()
    edge = _outline(gt.numpy())
    cells = [(_tint(rgb, gt.numpy(), (0, 200, 0), edge), f'GT "{sample.prompt}" #{change.instance}')]
    for t in (min(pred.iter_mask_logits), max(pred.iter_mask_logits)):
        masks = pred.iteration_probs(t) > 0.5
        if masks.shape[0]:
            iou = iou_matrix(gt[None], masks)[0]
            best = int(iou.argmax())
            cells.append((_tint(rgb, masks[best].numpy(), (220, 30, 30), edge),
                          f"M^{t}: IoU {float(iou[best]):.2f}"))
        else:
            cells.append((rgb, f"M^{t}: no detection"))
    font = ImageFont.load_default()
    row = Image.new("RGB", (side * len(cells), side + 14), "white")
    draw = ImageDraw.Draw(row)
    for j, (arr, text) in enumerate(cells):
        row.paste(Image.fromarray(arr).resize((side, side)), (j * side, 14))
        draw.text((j * side + 3, 1), text, fill=(0, 0, 0), font=font)
    return row
