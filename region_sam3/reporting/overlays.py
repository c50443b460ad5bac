"""Overlay grids of predictions for reports and notebooks: rows = images, columns = the
refinement iterations M^0 .. M^T (or the final mask only without a region head)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageFont

from region_sam3.predict import Prediction, Sam3Predictor, to_uint8_chw
from region_sam3.viz import overlay_predictions


@dataclass
class Sample:
    """One image of a split with a prompt present in it (a category with ground truth).

    Attributes:
        image: `[3,H,W]` uint8.  prompt: the category name.  image_id: COCO image id.
        gt_masks: `[G,H,W]` bool masks of that category (None when not decoded).
    """

    image: torch.Tensor
    prompt: str
    image_id: int
    gt_masks: torch.Tensor | None = None


def split_samples(image_dir: str | Path, ann_file: str | Path, num_images: int = 4,
                  with_masks: bool = False, skip: int = 0) -> list[Sample]:
    """The first `num_images` images of a COCO-format split, each with the category that has the
    most instances in it as the prompt (ties: the smallest id)."""
    coco = json.loads(Path(ann_file).read_text())
    names = {c["id"]: c["name"] for c in coco["categories"]}
    per_image: dict[int, list[dict]] = {}
    for ann in coco["annotations"]:
        if not ann.get("iscrowd", 0):
            per_image.setdefault(ann["image_id"], []).append(ann)
    samples = []
    for info in coco["images"][skip:]:
        anns = per_image.get(info["id"])
        if not anns:
            continue
        counts: dict[int, int] = {}
        for ann in anns:
            counts[ann["category_id"]] = counts.get(ann["category_id"], 0) + 1
        category = min(counts, key=lambda c: (-counts[c], c))
        path = Path(image_dir) / info["file_name"]
        image = to_uint8_chw(path)  # the training reader's decoder (16-bit files scaled)
        gt = None
        if with_masks:
            from pycocotools import mask as mask_utils

            from region_sam3.data.coco_index import segmentation_to_rle

            # Polygons, uncompressed and compressed RLE: the reader's own conversion.
            h, w = info["height"], info["width"]
            rles = [segmentation_to_rle(a["segmentation"], h, w) for a in anns
                    if a["category_id"] == category]
            gt = torch.from_numpy(mask_utils.decode(rles)).permute(2, 0, 1).bool()
        samples.append(Sample(image, names[category], int(info["id"]), gt))
        if len(samples) == num_images:
            break
    return samples


def at_iteration(pred: Prediction, t: int | None) -> Prediction:
    """`pred` with its masks replaced by refinement iteration t's (None: unchanged)."""
    if t is None:
        return pred
    probs = pred.iteration_probs(t)
    return replace(pred, masks=probs > 0.5, mask_probs=probs)


def _thumb(image: Image.Image, side: int) -> Image.Image:
    scale = side / max(image.size)
    return image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))))


def overlay_grid(predictor: Sam3Predictor, samples: Sequence[Sample],
                 iterations: Sequence[int] | None = None, score_threshold: float = 0.3,
                 side: int = 192, title: str = "") -> Image.Image:
    """A PNG-ready grid: one row per sample, one column per iteration in `iterations` (all
    of M^0..M^T by default when the model has a region head, else the final mask)."""
    font = ImageFont.load_default()
    rows: list[list[Image.Image]] = []
    column_titles: list[str] = []
    counts: list[int] = []
    for sample in samples:
        pred = predictor.predict(sample.image, sample.prompt, score_threshold,
                                 return_iterations=True)
        counts.append(len(pred))
        ts: list[int | None] = list(iterations) if iterations is not None else (
            sorted(pred.iter_mask_logits) or [None])
        if not column_titles:
            column_titles = ["final" if t is None else f"M^{t}" for t in ts]
        rgb = sample.image.permute(1, 2, 0).numpy()
        row = []
        for t in ts:
            cell = overlay_predictions(rgb, at_iteration(pred, t) if len(pred) else pred,
                                       labels=sample.prompt)
            row.append(_thumb(cell, side))
        rows.append(row)
    if not rows:
        return Image.new("RGB", (side, 24), "white")
    header = 16 + (16 if title else 0)
    width = side * len(column_titles)
    canvas = Image.new("RGB", (width, header + side * len(rows)), "white")
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((4, 2), title, fill=(0, 0, 0), font=font)
    for j, name in enumerate(column_titles):
        draw.text((j * side + 4, header - 14), name, fill=(0, 0, 0), font=font)
    for i, row in enumerate(rows):
        for j, cell in enumerate(row):
            canvas.paste(cell, (j * side, header + i * side))
        # the prompt of the row and how many detections passed the threshold
        text = f'"{samples[i].prompt}" ({counts[i]} det > {score_threshold})'
        box = draw.textbbox((0, 0), text, font=font)
        y = header + i * side + 2
        draw.rectangle([2, y, 6 + box[2] - box[0], y + 4 + box[3] - box[1]], fill=(255, 255, 255))
        draw.text((4, y + 1), text, fill=(0, 0, 0), font=font)
    return canvas


def stack_vertically(images: Sequence[Image.Image]) -> Image.Image:
    """Grids of several splits, one under the other."""
    width = max(im.width for im in images)
    canvas = Image.new("RGB", (width, sum(im.height for im in images)), "white")
    y = 0
    for im in images:
        canvas.paste(im, (0, y))
        y += im.height
    return canvas
