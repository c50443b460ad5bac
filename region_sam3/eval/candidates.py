"""Per-image detection candidates held on the logits' device until the image's top-K is final.

The prompts of one image may arrive in several evaluation batches. Resizing and RLE-encoding
each batch's top-K would cost up to ``#batches x K`` resizes + encodes per mask source for an
image that keeps only ``K``; instead a batch yields ``ImageCandidates`` (scores, labels, boxes
and the *low-res* model-frame logits of its top-K), ``merge`` folds a new batch's candidates
into the image's kept set with one stable sort over ``old + new <= 2K`` scores, and only the
final ``K`` masks are resized/encoded (``PostProcessor.finalize``).

Memory at official size (K = 100, 288^2 logits in bf16, final + 3 distinct iterates = 4
sources): ``K x sources x h x w x bytes = 100 x 4 x 288^2 x 2 B = 66 MB`` per open image on
the logits' device (+ up to the same again transiently while merging a batch).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
from torch import Tensor

from region_sam3.eval.types import RegionPairs


@dataclass
class ImageCandidates:
    """Top candidates of one image over the prompts seen so far (device tensors).

    Attributes:
        image_id: COCO image id.
        orig_size / valid_size / canvas_size: ``(h, w)`` of the original image, of its content
            inside the model canvas, and of the canvas (how masks map to the original frame).
        scores: ``[k]`` float32 detection scores, sorted descending (ties: arrival order).
        labels: ``[k]`` int64 prompted category ids.
        boxes: ``[k, 4]`` float32 xyxy in original pixels.
        masks: ``[k, h, w]`` low-res canvas logits of the final masks (model dtype).
        iterations: ``{t: [k, h, w]}`` logits of the iterates other than the final one, for
            the same candidates.
        final_iteration: the iterate that *is* the final mask, or None.
        region_pairs: optional distillation pairs of the image (host arrays).
    """

    image_id: int
    orig_size: tuple[int, int]
    valid_size: tuple[int, int]
    canvas_size: tuple[int, int]
    scores: Tensor
    labels: Tensor
    boxes: Tensor
    masks: Tensor
    iterations: dict[int, Tensor] = field(default_factory=dict)
    final_iteration: int | None = None
    region_pairs: RegionPairs | None = None

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    def select(self, idx: Tensor) -> ImageCandidates:
        """Subset / reorder (``idx``: ``[k']`` long on the candidates' device)."""
        return replace(
            self, scores=self.scores[idx], labels=self.labels[idx], boxes=self.boxes[idx],
            masks=self.masks[idx], iterations={t: m[idx] for t, m in self.iterations.items()},
        )

    def merge(self, new: ImageCandidates, k: int) -> ImageCandidates:
        """Top ``k`` of ``self`` followed by ``new`` (a later batch of the same image): one
        stable descending sort over ``<= 2k`` scores, so earlier candidates win ties exactly
        as if all prompts had been in one batch."""
        if new.iterations.keys() != self.iterations.keys() or (
            new.final_iteration != self.final_iteration
        ):
            raise ValueError(f"image {self.image_id}: batches disagree on the refinement iterates")
        if new.orig_size != self.orig_size or new.valid_size != self.valid_size:
            raise ValueError(f"image {self.image_id}: batches disagree on the image size "
                             f"({self.orig_size}/{self.valid_size} vs "
                             f"{new.orig_size}/{new.valid_size})")
        both = ImageCandidates(
            image_id=self.image_id, orig_size=self.orig_size, valid_size=self.valid_size,
            canvas_size=self.canvas_size,
            scores=torch.cat([self.scores, new.scores]),
            labels=torch.cat([self.labels, new.labels]),
            boxes=torch.cat([self.boxes, new.boxes]),
            masks=torch.cat([self.masks, new.masks]),
            iterations={t: torch.cat([m, new.iterations[t]]) for t, m in self.iterations.items()},
            final_iteration=self.final_iteration,
            region_pairs=RegionPairs.concat([self.region_pairs, new.region_pairs]),
        )
        if len(both) <= k:
            return both
        order = torch.sort(both.scores, descending=True, stable=True).indices[:k]
        return both.select(order)
