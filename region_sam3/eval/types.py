"""Input records of the evaluation suite: per-image detections and ground truth, both in the
**original image frame** (the size of the file on disk), both compact (RLEs, a few floats).

``ImageDetections`` is what ``region_sam3.eval.postprocess`` produces from model outputs: the
top ``max_dets_per_image`` detections over *all prompts of one image* (SAM3's
``PostProcessImage`` semantics), each with a score, a label (the prompted category id), an xyxy
box and a COCO RLE. Per-iteration masks of the region head ride along in ``iterations`` for the
*same* detections (the final iterate's top-K selection).

``ImageGroundTruth`` is one image's COCO annotations (RLE, ``area``, ``iscrowd``) for the
categories that were prompted, plus the image's instance count (crowded split).

Memory: one image costs ``K`` RLEs per mask source (final + one per iteration that differs from
the final) plus ``K`` floats; an RLE of a typical object mask at 640x480 is a few hundred bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np


@dataclass
class IterationMasks:
    """Masks of one refinement iterate for the detections of an ``ImageDetections``.

    Attributes:
        rles: ``K`` COCO RLEs aligned with the detections.
        stability: ``[K]`` float32 SAM stability score of each mask (see ``stability``).
        boundaries: optional ``K`` RLEs of the masks' boundary bands (``ImageDetections``).
    """

    rles: list[dict[str, Any]]
    stability: np.ndarray
    boundaries: list[dict[str, Any]] | None = None


@dataclass
class RegionPairs:
    """Distillation pairs of one image: the student region embedding of the query SAM3's matcher
    assigns to each GT instance, and the teacher embedding of that instance.

    Attributes:
        student: ``[N, D]`` float32 (L2-normalised).  teacher: ``[N, D]`` float32.
        category_ids: ``[N]`` int64 prompted category of each pair.
    """

    student: np.ndarray
    teacher: np.ndarray
    category_ids: np.ndarray

    @staticmethod
    def concat(parts: Sequence[RegionPairs]) -> RegionPairs | None:
        parts = [p for p in parts if p is not None]
        if not parts:
            return None
        return RegionPairs(
            np.concatenate([p.student for p in parts]),
            np.concatenate([p.teacher for p in parts]),
            np.concatenate([p.category_ids for p in parts]),
        )


@dataclass
class ImageDetections:
    """Top-K detections of one image over all its prompts, original frame.

    Attributes:
        image_id: COCO image id.
        height / width: original image size.
        scores: ``[K]`` float32, ``sigmoid(logit) * sigmoid(presence)``, sorted descending.
        labels: ``[K]`` int64 category id of the prompt that produced each detection.
        boxes: ``[K, 4]`` float32 xyxy in original pixels.
        rles: ``K`` COCO RLEs (``counts`` as str) of the masks thresholded at probability 0.5.
        stability: ``[K]`` float32 SAM stability score of each final mask.
        iterations: ``{t: IterationMasks}`` for refinement iterates other than the final one.
        final_iteration: the iterate ``t`` that *is* the final mask (its metrics are copied from
            the final ones, never recomputed), or None.
        region_pairs: optional distillation pairs of the image.
        boundaries: optional ``K`` RLEs of the boundary bands of the final masks, made by the
            post-processor while the masks are dense (Boundary AP then skips decoding them);
            ``boundary_ratio`` is the dilation ratio they were made with.
    """

    image_id: int
    height: int
    width: int
    scores: np.ndarray
    labels: np.ndarray
    boxes: np.ndarray
    rles: list[dict[str, Any]]
    stability: np.ndarray
    iterations: dict[int, IterationMasks] = field(default_factory=dict)
    final_iteration: int | None = None
    region_pairs: RegionPairs | None = None
    boundaries: list[dict[str, Any]] | None = None
    boundary_ratio: float | None = None

    def __post_init__(self) -> None:
        k = len(self.rles)
        if self.boundaries is not None and len(self.boundaries) != k:
            raise ValueError(f"image {self.image_id}: {len(self.boundaries)} boundaries for "
                             f"{k} masks")
        if not (len(self.scores) == len(self.labels) == len(self.boxes) == len(self.stability) == k):
            raise ValueError(
                f"image {self.image_id}: scores/labels/boxes/stability/rles lengths differ "
                f"({len(self.scores)}, {len(self.labels)}, {len(self.boxes)}, "
                f"{len(self.stability)}, {k})"
            )

    def __len__(self) -> int:
        return len(self.rles)

    def iteration_keys(self) -> list[int]:
        keys = set(self.iterations)
        if self.final_iteration is not None:
            keys.add(self.final_iteration)
        return sorted(keys)

    def view(self, t: int | None) -> ImageDetections:
        """The same detections with the masks of iterate ``t`` (``None``: final masks)."""
        if t is None or t == self.final_iteration:
            return self
        it = self.iterations[t]
        return replace(self, rles=it.rles, stability=it.stability, iterations={},
                       final_iteration=None, boundaries=it.boundaries)

    def select(self, idx: np.ndarray) -> ImageDetections:
        """Subset / reorder of the detections (``idx``: ``[K']`` int indices)."""
        idx = np.asarray(idx, dtype=np.int64)

        def pick(rles):
            return None if rles is None else [rles[i] for i in idx]

        return replace(
            self,
            scores=self.scores[idx], labels=self.labels[idx], boxes=self.boxes[idx],
            rles=pick(self.rles), stability=self.stability[idx], boundaries=pick(self.boundaries),
            iterations={t: IterationMasks(pick(it.rles), it.stability[idx], pick(it.boundaries))
                        for t, it in self.iterations.items()},
        )

    @staticmethod
    def concat(parts: Sequence[ImageDetections], max_dets: int) -> ImageDetections:
        """Merge detections of one image from several batches and keep the top ``max_dets``
        (stable: earlier parts win ties, as if all prompts had been in one batch)."""
        first = parts[0]
        if len(parts) == 1 and len(first) <= max_dets:
            return first
        keys = first.iterations.keys()
        if any(p.iterations.keys() != keys or p.final_iteration != first.final_iteration
               for p in parts):
            raise ValueError(f"image {first.image_id}: batches disagree on the refinement iterates")

        def joined(get):  # boundary RLEs survive a merge only when every part has them
            lists = [get(p) for p in parts]
            return None if any(v is None for v in lists) else [r for v in lists for r in v]

        ratio = first.boundary_ratio if all(p.boundary_ratio == first.boundary_ratio
                                            for p in parts) else None
        merged = ImageDetections(
            image_id=first.image_id, height=first.height, width=first.width,
            scores=np.concatenate([p.scores for p in parts]),
            labels=np.concatenate([p.labels for p in parts]),
            boxes=np.concatenate([p.boxes for p in parts]),
            rles=[r for p in parts for r in p.rles],
            stability=np.concatenate([p.stability for p in parts]),
            iterations={t: IterationMasks([r for p in parts for r in p.iterations[t].rles],
                                          np.concatenate([p.iterations[t].stability for p in parts]),
                                          joined(lambda p, t=t: p.iterations[t].boundaries))
                        for t in keys},
            final_iteration=first.final_iteration,
            region_pairs=RegionPairs.concat([p.region_pairs for p in parts]),
            boundaries=joined(lambda p: p.boundaries) if ratio is not None else None,
            boundary_ratio=ratio,
        )
        order = np.argsort(-merged.scores, kind="stable")[:max_dets]
        return merged.select(order)

    @staticmethod
    def empty(image_id: int, height: int, width: int) -> ImageDetections:
        """No detections (an image with prompts but no candidates)."""
        return ImageDetections(
            image_id=image_id, height=height, width=width,
            scores=np.zeros(0, np.float32), labels=np.zeros(0, np.int64),
            boxes=np.zeros((0, 4), np.float32), rles=[], stability=np.zeros(0, np.float32))


@dataclass
class ImageGroundTruth:
    """COCO ground truth of one image in the original frame.

    Attributes:
        image_id / height / width: as in the COCO ``images`` record.
        annotations: COCO annotation dicts with ``id``, ``category_id``, ``segmentation`` (a
            compressed RLE), ``area`` (the file's value when present, as pycocotools uses it)
            and ``iscrowd``. Only the prompted categories are kept.
        prompted_category_ids: categories that were prompted on this image (positives and
            negatives); a prompt with no GT is a negative (its detections are false positives).
        num_instances: non-crowd instances of the image over all categories (crowded split).
    """

    image_id: int
    height: int
    width: int
    annotations: list[dict[str, Any]]
    prompted_category_ids: tuple[int, ...]
    num_instances: int

    def merge(self, other: ImageGroundTruth) -> ImageGroundTruth:
        """Union with the GT of the same image seen in another batch (prompts split)."""
        seen = {a["id"] for a in self.annotations}
        anns = self.annotations + [a for a in other.annotations if a["id"] not in seen]
        cats = tuple(dict.fromkeys(self.prompted_category_ids + other.prompted_category_ids))
        return replace(self, annotations=anns, prompted_category_ids=cats,
                       num_instances=max(self.num_instances, other.num_instances))
