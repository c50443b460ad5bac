"""Per-image detection candidates held on the logits' device until the image's top-K is final.

The prompts of one image may arrive in several evaluation batches. Resizing and RLE-encoding
each batch's top-K would cost up to ``#batches x K`` resizes + encodes per mask source for an
image that keeps only ``K``; instead a batch yields ``ImageCandidates`` (scores, labels, boxes
and the *low-res* model-frame logits of its top-K), ``merge`` folds a new batch's candidates
into the image's kept set with one stable sort over ``old + new <= 2K`` scores, and only the
final ``K`` masks are resized/encoded (``PostProcessor.finalize``).

Memory at official size (K = 100, 288^2 logits in bf16, final + 3 distinct iterates = 4
sources): ``K x sources x h x w x bytes = 100 x 4 x 288^2 x 2 B = 66 MB`` per open image on
the logits' device (+ the entering candidates of one batch while merging: ``<= K`` masks per source).
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
        rank: ``[k]`` int64 arrival keys for tie-breaking (None: in order), see ``merge``.
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
    rank: Tensor | None = None

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    def select(self, idx: Tensor) -> ImageCandidates:
        """Subset / reorder (``idx``: ``[k']`` long on the candidates' device)."""
        return replace(
            self, rank=None if self.rank is None else self.rank[idx], scores=self.scores[idx], labels=self.labels[idx], boxes=self.boxes[idx],
            masks=self.masks[idx], iterations={t: m[idx] for t, m in self.iterations.items()},
        )

    def arrival(self) -> Tensor:
        """``[k]`` int64 tie-break key (lower = earlier), ``rank`` or position by default."""
        if self.rank is not None:
            return self.rank
        return torch.arange(len(self), device=self.scores.device)

    def sorted(self) -> ImageCandidates:
        """Ordered by descending score, ties by arrival (as if all prompts were one batch)."""
        order = torch.sort(self.arrival(), stable=True).indices
        order = order[torch.sort(self.scores[order], descending=True, stable=True).indices]
        return replace(self.select(order), rank=None)

    def merge(self, new: ImageCandidates, k: int, offset: int = 0) -> ImageCandidates:
        """Top ``k`` of ``self`` and ``new`` (a later batch of the same image; its arrival keys
        are shifted by ``offset`` so earlier candidates win ties exactly as if all prompts had
        been in one batch).

        Once ``self`` holds ``k``, the new candidates that make the cut are written *in place*
        into the slots of the evicted ones (the kept set is unordered until ``sorted``), so a
        batch costs a copy of the entering masks only; with ``score_floors`` passed to
        ``PostProcessor.select`` few candidates enter after an image's first batches.
        """
        if new.iterations.keys() != self.iterations.keys() or (
            new.final_iteration != self.final_iteration
        ):
            raise ValueError(f"image {self.image_id}: batches disagree on the refinement iterates")
        if new.orig_size != self.orig_size or new.valid_size != self.valid_size:
            raise ValueError(f"image {self.image_id}: batches disagree on the image size "
                             f"({self.orig_size}/{self.valid_size} vs "
                             f"{new.orig_size}/{new.valid_size})")
        pairs = RegionPairs.concat([self.region_pairs, new.region_pairs])
        new_rank = new.arrival() + offset
        n_old = len(self)
        if n_old < k or len(new) == 0:  # filling up: concatenate, then trim once
            both = replace(
                self,
                scores=torch.cat([self.scores, new.scores]),
                labels=torch.cat([self.labels, new.labels]),
                boxes=torch.cat([self.boxes, new.boxes]),
                masks=torch.cat([self.masks, new.masks]),
                iterations={t: torch.cat([m, new.iterations[t]])
                            for t, m in self.iterations.items()},
                region_pairs=pairs, rank=torch.cat([self.arrival(), new_rank]),
            )
            return both if len(both) <= k else replace(both.sorted().select(
                torch.arange(k, device=both.scores.device)), rank=None)
        scores = torch.cat([self.scores, new.scores])
        rank = torch.cat([self.arrival(), new_rank])
        order = torch.sort(rank, stable=True).indices
        order = order[torch.sort(scores[order], descending=True, stable=True).indices]
        keep = torch.zeros_like(scores, dtype=torch.bool)
        keep[order[:k]] = True
        evicted = torch.nonzero(~keep[:n_old]).squeeze(1)
        entering = torch.nonzero(keep[n_old:]).squeeze(1)  # as many as evicted
        out = replace(self, scores=self.scores.clone(), labels=self.labels.clone(),
                      boxes=self.boxes.clone(), rank=rank[:n_old].clone(), region_pairs=pairs)
        for dst, src in ((out.scores, new.scores), (out.labels, new.labels),
                         (out.boxes, new.boxes), (out.rank, new_rank), (out.masks, new.masks),
                         *((out.iterations[t], m) for t, m in new.iterations.items())):
            dst[evicted] = src[entering]  # masks: in place in the pool's own buffers
        return out
