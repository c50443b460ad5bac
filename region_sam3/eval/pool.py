"""Per-image candidate pool for streaming evaluation (ground truth: ``eval.ground_truth``).

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

from region_sam3.eval.candidates import ImageCandidates
from region_sam3.eval.postprocess import PostProcessor
from region_sam3.eval.types import ImageDetections, ImageGroundTruth

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
                merged = ImageDetections.concat([old, d], self.max_dets)
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
                det = ImageDetections.empty(gt.image_id, gt.height, gt.width)
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
