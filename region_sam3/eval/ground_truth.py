"""Ground truth of one evaluation batch, in the original image frame, for the evaluators.

COCO-style evaluators score against the file's own annotations (crowd regions, areas and RLEs
as written), not the model-frame training targets; `FindQueryDataset(eval_annotations=True)`
attaches them to each batch as `gt_annotations`.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.nn.functional as F

from region_sam3.eval.masks import encode_masks
from region_sam3.eval.types import ImageGroundTruth

log = logging.getLogger(__name__)


def ground_truth_from_batch(batch: Any) -> list[ImageGroundTruth]:
    """One ``ImageGroundTruth`` per image of a ``FindQueryBatch``, original frame.

    Uses ``batch.gt_annotations`` (the file's annotations, crowd regions included, attached by
    ``FindQueryDataset(eval_annotations=True)``). Batches without them (hand-built batches) fall
    back to the model-frame GT masks cropped to the content window and nearest-resized to the
    original size, without crowd regions: approximate, and logged.
    """
    qii = batch.query_image_index.tolist()
    cats = batch.category_ids.tolist()
    image_ids = batch.image_ids.tolist()
    orig = batch.orig_sizes.tolist()
    prompted: list[list[int]] = [[] for _ in image_ids]
    for n, c in zip(qii, cats):
        prompted[n].append(int(c))
    annotations = getattr(batch, "gt_annotations", None)
    if annotations is None:
        log.warning("evaluation batch has no original-frame annotations (gt_annotations): "
                    "using model-frame masks resized to the original size, no crowd regions")
        annotations = _annotations_from_masks(batch)
    out = []
    for n, image_id in enumerate(image_ids):
        wanted = set(prompted[n])
        anns = annotations[n]
        out.append(ImageGroundTruth(
            image_id=int(image_id), height=int(orig[n][0]), width=int(orig[n][1]),
            annotations=[a for a in anns if int(a["category_id"]) in wanted],
            prompted_category_ids=tuple(dict.fromkeys(prompted[n])),
            num_instances=sum(1 for a in anns if not a.get("iscrowd", 0)),
        ))
    return out


def _annotations_from_masks(batch: Any) -> list[list[dict[str, Any]]]:
    out: list[list[dict[str, Any]]] = [[] for _ in range(len(batch.image_ids))]
    image_of_target = batch.query_image_index[batch.target_query_index].tolist()
    cats = batch.category_ids[batch.target_query_index].tolist()
    ann_ids = batch.annotation_ids.tolist()
    for n in range(len(batch.image_ids)):
        rows = [i for i, m in enumerate(image_of_target) if m == n]
        if not rows:
            continue
        vh, vw = batch.valid_sizes[n].tolist()
        oh, ow = batch.orig_sizes[n].tolist()
        masks = batch.masks[rows][:, :vh, :vw].float()
        masks = F.interpolate(masks[None], size=(oh, ow), mode="nearest")[0] > 0.5
        areas = masks.flatten(1).sum(1).tolist()
        for i, rle, area in zip(rows, encode_masks(masks.to(torch.bool)), areas):
            out[n].append({"id": int(ann_ids[i]), "category_id": int(cats[i]),
                           "segmentation": rle, "area": float(area), "iscrowd": 0})
    return out
