"""Builders of per-image evaluation records (detections + COCO ground truth) for the tests."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pycocotools.mask as mask_utils

from region_sam3.eval import ImageDetections, ImageGroundTruth, IterationMasks


def rle(mask: np.ndarray) -> dict:
    """``[H, W]`` bool -> COCO RLE with str counts."""
    r = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    r["counts"] = r["counts"].decode("ascii")
    return r


def box_mask(h: int, w: int, y0: int, x0: int, y1: int, x1: int) -> np.ndarray:
    m = np.zeros((h, w), dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


def ground_truth(
    image_id: int,
    masks: Sequence[np.ndarray],
    categories: Sequence[int],
    prompted: Sequence[int] | None = None,
    iscrowd: Sequence[int] | None = None,
    num_instances: int | None = None,
    size: tuple[int, int] | None = None,
) -> ImageGroundTruth:
    h, w = size or masks[0].shape
    iscrowd = list(iscrowd) if iscrowd is not None else [0] * len(masks)
    anns = [
        {"id": 1000 * image_id + i + 1, "category_id": int(c), "segmentation": rle(m),
         "area": float(m.sum()), "iscrowd": int(cr)}
        for i, (m, c, cr) in enumerate(zip(masks, categories, iscrowd))
    ]
    prompted = tuple(prompted if prompted is not None else dict.fromkeys(categories))
    n = num_instances if num_instances is not None else sum(1 for c in iscrowd if not c)
    return ImageGroundTruth(image_id, h, w, anns, prompted, n)


def detections(
    image_id: int,
    masks: Sequence[np.ndarray],
    scores: Sequence[float],
    labels: Sequence[int],
    stability: Sequence[float] | None = None,
    iterations: dict[int, Sequence[np.ndarray]] | None = None,
    final_iteration: int | None = None,
    size: tuple[int, int] | None = None,
) -> ImageDetections:
    h, w = size or masks[0].shape
    k = len(masks)
    stab = np.asarray(stability if stability is not None else [1.0] * k, dtype=np.float32)
    return ImageDetections(
        image_id=image_id, height=h, width=w,
        scores=np.asarray(scores, dtype=np.float32), labels=np.asarray(labels, dtype=np.int64),
        boxes=np.zeros((k, 4), np.float32), rles=[rle(m) for m in masks], stability=stab,
        iterations={t: IterationMasks([rle(m) for m in ms], stab.copy())
                    for t, ms in (iterations or {}).items()},
        final_iteration=final_iteration,
    )
