"""Region retrieval: a phrase -> the regions whose distilled embedding matches it best, next to
the teacher's own ranking of the same regions."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

from region_sam3.predict import Prediction, Sam3Predictor
from region_sam3.reporting.overlays import Sample


@dataclass
class RegionPool:
    """Kept detections of several images: `student [R,D]` distilled embeddings, `teacher [R,D]`
    the teacher's embeddings of the same masks, and where each region comes from."""

    samples: list[Sample]
    predictions: list[Prediction]
    index: list[tuple[int, int]]          # (sample, detection) per region
    student: torch.Tensor
    teacher: torch.Tensor


@torch.no_grad()
def collect_regions(predictor: Sam3Predictor, samples: Sequence[Sample],
                    score_threshold: float = 0.3) -> RegionPool:
    """Segment each sample's prompt; keep every detection's distilled and teacher embeddings."""
    if predictor.teacher is None:
        raise ValueError("the predictor needs the teacher (Sam3Predictor(..., teacher=...))")
    preds, index, student, teacher = [], [], [], []
    device = next(predictor.teacher.parameters()).device
    for i, sample in enumerate(samples):
        pred = predictor.predict(sample.image, sample.prompt, score_threshold)
        preds.append(pred)
        if not len(pred):
            continue
        if pred.region_embeds is None:
            raise ValueError("the model has no region head: no region embeddings to query")
        index += [(i, j) for j in range(len(pred))]
        student.append(pred.region_embeds)
        pixels = sample.image.float()[None].to(device) / 255.0
        teacher.append(predictor.teacher(pixels, pred.mask_probs.to(device)).float().cpu())
    dim = predictor.teacher.embed_dim
    return RegionPool(list(samples), preds, index,
                      torch.cat(student) if student else torch.zeros(0, dim),
                      torch.cat(teacher) if teacher else torch.zeros(0, dim))


def rank(pool: RegionPool, text_embed: torch.Tensor, k: int = 5) -> dict[str, list[int]]:
    """Top-k region indices for one `[D]` text embedding, by the student and by the teacher."""
    text = F.normalize(text_embed.float(), dim=-1)
    out = {}
    for who, emb in (("student", pool.student), ("teacher", pool.teacher)):
        sim = F.normalize(emb, dim=-1) @ text
        out[who] = sim.argsort(descending=True)[:k].tolist()
    return out


def overlap_at_k(ranking: dict[str, list[int]]) -> float:
    """Fraction of the student's top-k that is also in the teacher's top-k."""
    s, t = ranking["student"], ranking["teacher"]
    return len(set(s) & set(t)) / max(1, len(s))


def crop(pool: RegionPool, region: int, side: int = 96) -> Image.Image:
    """The region's box crop with its mask tinted, resized to `side`."""
    i, j = pool.index[region]
    pred = pool.predictions[i]
    rgb = pool.samples[i].image.permute(1, 2, 0).float()
    mask = pred.masks[j]
    rgb[mask] = 0.5 * rgb[mask] + 0.5 * torch.tensor([255.0, 64.0, 64.0])
    x0, y0, x1, y1 = (int(v) for v in pred.boxes[j].round().tolist())
    h, w = mask.shape
    x0, y0 = max(0, min(x0, w - 1)), max(0, min(y0, h - 1))
    x1, y1 = max(x0 + 1, min(x1, w)), max(y0 + 1, min(y1, h))
    img = Image.fromarray(rgb[y0:y1, x0:x1].clamp(0, 255).byte().numpy())
    return img.resize((side, side))


def ranking_figure(pool: RegionPool, ranking: dict[str, list[int]], phrase: str,
                   side: int = 96) -> Image.Image:
    """Two rows of crops: the student's top-k and the teacher's top-k for `phrase`."""
    k = max(len(v) for v in ranking.values()) or 1
    font = ImageFont.load_default()
    canvas = Image.new("RGB", (70 + side * k, 16 + 2 * side), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((4, 2), f'"{phrase}"', fill=(0, 0, 0), font=font)
    for row, who in enumerate(("student", "teacher")):
        draw.text((4, 16 + row * side + side // 2), who, fill=(0, 0, 0), font=font)
        for col, region in enumerate(ranking[who]):
            canvas.paste(crop(pool, region, side), (70 + col * side, 16 + row * side))
    return canvas
