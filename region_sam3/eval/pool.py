"""Per-image candidate pool and ground truth assembly for streaming evaluation.

The prompts of one image may arrive in several evaluation batches (e.g. 80 COCO prompts
chunked to fit memory). SAM3's top-K is over *all* prompts of an image, so each batch yields
its own top-K per image and ``DetectionPool`` merges them, keeping at most K per image.

Two kinds of input: ``ImageCandidates`` (``PostProcessor.select``; the training module uses
these) are merged on the logits' device with their *low-res* masks and only encoded
(``PostProcessor.finalize``: resize to the original size, stability, RLE) when the image is
released, so each kept mask is resized/encoded exactly once however many batches the image's
prompts span. ``ImageDetections`` (already encoded, e.g. ``PostProcessor.__call__``) are
merged as RLEs.

Memory bound of the candidate pool, on the logits' device: ``open images x K x sources x h x w
x bytes`` (+ the candidates entering from one batch while merging). Open images are those of the
current batch plus any still waiting for their next batch, i.e. about one batch's images. At
official size (K = 100, 288^2 bf16 logits, final + 3 distinct iterates): 66 MB per open image.

Images are released to the evaluators by ``pop_finished`` once a batch no longer contains them
(an evaluation loader delivers an image's prompts in consecutive batches: true for
``FindQueryDataset``, where one item is one image with all its prompts) and by ``flush`` at the
end of the epoch, so the pool itself stays bounded by the images of about one batch.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from region_sam3.eval.candidates import ImageCandidates
from region_sam3.eval.postprocess import PostProcessor, concat_detections
from region_sam3.eval.types import ImageDetections, ImageGroundTruth, encode_masks

log = logging.getLogger(__name__)


class DetectionPool:
    """Bounded per-image candidate pool (module docstring)."""

    def __init__(
        self, max_dets_per_image: int = 100, postprocessor: PostProcessor | None = None
    ) -> None:
        """``postprocessor`` encodes released ``ImageCandidates`` (default: ``PostProcessor``
        with the same K and default settings)."""
        self.max_dets = int(max_dets_per_image)
        self.postprocessor = postprocessor or PostProcessor(self.max_dets)
        self._dets: dict[int, ImageDetections | ImageCandidates] = {}
        self._gts: dict[int, ImageGroundTruth] = {}
        self._arrivals = 0

    def __len__(self) -> int:
        return len(self._gts)

    def add(
        self,
        dets: Sequence[ImageCandidates | ImageDetections],
        gts: Sequence[ImageGroundTruth],
    ) -> None:
        """Merge one batch's candidates (or encoded detections) and ground truth."""
        for d in dets:
            old = self._dets.get(d.image_id)
            if old is None:
                merged = d
            elif type(old) is not type(d):
                raise TypeError(f"image {d.image_id}: cannot merge {type(d).__name__} into "
                                f"pooled {type(old).__name__}")
            elif isinstance(d, ImageCandidates):
                self._arrivals += 1 << 32  # later batches lose ties, as in one batch
                merged = old.merge(d, self.max_dets, offset=self._arrivals)
            else:
                merged = concat_detections([old, d], self.max_dets)
            self._dets[d.image_id] = merged
        for g in gts:
            old_gt = self._gts.get(g.image_id)
            self._gts[g.image_id] = old_gt.merge(g) if old_gt is not None else g

    def score_floors(self, image_ids: Iterable[int]) -> dict[int, float]:
        """``{image_id: K-th score held}`` of the pooled images that are full: a candidate
        must beat it to enter (``PostProcessor(score_floors=...)`` skips the others' masks)."""
        out = {}
        for i in image_ids:
            d = self._dets.get(int(i))
            if d is not None and len(d) >= self.max_dets:
                out[int(i)] = float(d.scores.min())
        return out

    def _pop(self, image_ids: Iterable[int]) -> tuple[list[ImageDetections], list[ImageGroundTruth]]:
        dets, gts = [], []
        for i in list(image_ids):
            gt = self._gts.pop(i)
            det = self._dets.pop(i, None)
            if det is None:  # an image with prompts but no candidates (e.g. K slots all empty)
                det = empty_detections(gt)
            elif isinstance(det, ImageCandidates):
                det = self.postprocessor.finalize(det)
            dets.append(det)
            gts.append(gt)
        return dets, gts

    def pop_finished(self, active_image_ids: Iterable[int]):
        """Release every pooled image not in ``active_image_ids`` (the current batch)."""
        active = set(int(i) for i in active_image_ids)
        return self._pop([i for i in self._gts if i not in active])

    def flush(self) -> tuple[list[ImageDetections], list[ImageGroundTruth]]:
        """Release everything (end of epoch)."""
        return self._pop(list(self._gts))


def empty_detections(gt: ImageGroundTruth) -> ImageDetections:
    return ImageDetections(
        image_id=gt.image_id, height=gt.height, width=gt.width,
        scores=np.zeros(0, np.float32), labels=np.zeros(0, np.int64),
        boxes=np.zeros((0, 4), np.float32), rles=[], stability=np.zeros(0, np.float32),
    )


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
