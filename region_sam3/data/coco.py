"""COCO-format find-query dataset: one item = one image with all its find queries.

Positives: every category with at least one (non-crowd) instance in the image, all of its
instances as targets. Negatives: categories absent from the image (for LVIS only the image's
verified `neg_category_ids`), either all of them (`all_categories=True`, what exhaustive
evaluation needs) or `negative_ratio` negatives per positive query, stochastically rounded so
the ratio holds in expectation. Sampling is a pure function of (seed, index), or with
`resample_each_epoch` of (seed, draw, index) where `draw` is the training sampler's epoch
(`data/resumable_loader.ResumableRandomSampler`); random augmentations are seeded by
(seed, draw, index) too, so a resumed run reproduces them whichever worker loads a sample.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_utils
import torch
from torch.utils.data import Dataset

from region_sam3.data.batch import FindQuerySample
from region_sam3.data.coco_index import (
    ImageRecord,
    decode_segmentation,
    load_coco_index,
    segmentation_to_rle,
)
from region_sam3.data.image_io import UnreadableImageError, decode_rgb
from region_sam3.data.issues import DataIssueError, IssueCounter
from region_sam3.data.transforms import FindQueryTransform, TransformOutput

log = logging.getLogger(__name__)


def read_image(record: ImageRecord) -> torch.Tensor:
    """Decode `record.path` -> [3,H,W] uint8 RGB; raises UnreadableImageError naming the file."""
    image = decode_rgb(record.path)  # 16-bit files scaled to 8 bits, as the predictor does
    if tuple(image.shape[-2:]) != (record.height, record.width):
        raise UnreadableImageError(
            f"{record.path}: decoded size {tuple(image.shape[-2:])} != json height/width "
            f"{(record.height, record.width)}"
        )
    return image


def original_frame_annotations(record: ImageRecord) -> list[dict]:
    """COCO annotations of one image for evaluation: compressed RLE in the original frame,
    `area` as in the file (pycocotools uses it for the size buckets and crowd handling; mask
    area when absent) and `iscrowd`. Exactly what ``COCOeval`` reads from the file: crowd
    regions included (detections on them are ignored, not false positives), instances whose
    mask is empty included (the file counts them), in file order (COCOeval breaks IoU ties
    between ignored GT by their order)."""
    out = []
    for ann in record.eval_annotations:
        rle = segmentation_to_rle(ann["segmentation"], record.height, record.width)
        counts = rle["counts"]
        rle = {"size": list(rle["size"]),
               "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts}
        area = ann.get("area")
        out.append({
            "id": int(ann["id"]),
            "category_id": int(ann["category_id"]),
            "segmentation": rle,
            "area": float(area) if area is not None else float(mask_utils.area(rle)),
            "iscrowd": int(bool(ann.get("iscrowd", 0))),
        })
    return out


def confusable_categories(names: dict[int, str]) -> dict[int, set[int]]:
    """Category id -> the other ids whose prompt shares a word with it ("red circle" ->
    "red star", "blue circle", ...): the pool of hard negatives."""
    words = {cid: set(name.lower().split()) for cid, name in names.items()}
    return {cid: {other for other, w in words.items() if other != cid and w & mine}
            for cid, mine in words.items()}


class FindQueryDataset(Dataset):
    """COCO-format images + instances json -> `FindQuerySample`s.

    Args:
        image_dir / ann_file: the COCO layout (file_name is relative to image_dir).
        transform: joint image/mask transform; default keeps the original size.
        negative_ratio: negative queries per positive query (images without positives get
            `negative_ratio` negatives); ignored when `all_categories`.
        hard_negative_fraction: share of the sampled negatives drawn, where possible, from
            absent categories whose prompt shares a word with a present one ("red star" when a
            red circle is present, "blue circle" likewise): a detector that keys on one
            attribute is penalised. 0 keeps the uniform draw (and its random stream).
        all_categories: query every category (positives + all absent ones), for evaluation.
        max_queries_per_image: cap on queries per image; when it bites, positives and
            negatives are subsampled in proportion.
        strict: raise on the first bad input instead of skipping and counting.
        validate_masks: rasterise every mask once at setup to drop empty ones.
        eval_annotations: attach the image's annotations in the original frame (instances and
            `iscrowd` regions as compressed RLE with the file's `area`) for evaluation.
    """

    def __init__(
        self,
        image_dir: str | Path,
        ann_file: str | Path,
        transform: Callable[[torch.Tensor, torch.Tensor], TransformOutput] | None = None,
        negative_ratio: float = 1.0,
        hard_negative_fraction: float = 0.0,
        all_categories: bool = False,
        max_queries_per_image: int | None = None,
        resample_each_epoch: bool = False,
        seed: int = 0,
        strict: bool = False,
        validate_masks: bool = True,
        max_load_retries: int = 16,
        eval_annotations: bool = False,
    ) -> None:
        if negative_ratio < 0:
            raise ValueError(f"negative_ratio must be >= 0, got {negative_ratio}")
        if not 0.0 <= hard_negative_fraction <= 1.0:
            raise ValueError(
                f"hard_negative_fraction must be in [0, 1], got {hard_negative_fraction}")
        if max_queries_per_image is not None and max_queries_per_image < 1:
            raise ValueError(f"max_queries_per_image must be >= 1, got {max_queries_per_image}")
        index = load_coco_index(ann_file, image_dir, strict=strict, validate_masks=validate_masks)
        self.ann_file = index.ann_file
        self.category_names: dict[int, str] = index.categories
        self.records = index.images
        self.setup_issues = index.issues
        self.transform = transform or FindQueryTransform(resolution=None)
        self.negative_ratio = negative_ratio
        self.hard_negative_fraction = hard_negative_fraction
        self._confusable = confusable_categories(self.category_names)
        self.all_categories = all_categories
        self.max_queries_per_image = max_queries_per_image
        self.resample_each_epoch = resample_each_epoch
        self.seed = seed
        self.strict = strict
        self.max_load_retries = max_load_retries
        self.eval_annotations = eval_annotations
        # Per process (each dataloader worker has its own copy); logged as problems are found.
        self.load_issues = IssueCounter(f"{index.ann_file} (load time)", strict=strict)
        self._category_ids = np.array(sorted(self.category_names), dtype=np.int64)
        if not self.records:
            raise ValueError(f"{self.ann_file}: no usable images ({self.setup_issues.summary()})")
        self.setup_issues.log_summary()

    def __len__(self) -> int:
        return len(self.records)

    def _rng(self, index: int, draw: int = 0) -> np.random.Generator:
        if self.resample_each_epoch:  # a new prompt draw each epoch, reproducible on resume
            return np.random.default_rng([self.seed, draw, index])
        return np.random.default_rng([self.seed, index])

    def select_queries(
        self, record: ImageRecord, rng: np.random.Generator
    ) -> tuple[list[int], list[int]]:
        """Return (positive, negative) category ids for one image."""
        positives = sorted({int(a["category_id"]) for a in record.annotations})
        present = set(positives) | record.crowd_category_ids
        pool = (
            self._category_ids
            if record.neg_category_ids is None
            else np.array(
                sorted(set(record.neg_category_ids) & set(self.category_names)), dtype=np.int64
            )
        )
        candidates = pool[~np.isin(pool, list(present))]
        if self.all_categories:
            negatives = candidates.tolist()
        else:
            expected = self.negative_ratio * max(len(positives), 1)
            count = math.floor(expected) + int(rng.random() < expected - math.floor(expected))
            count = min(count, len(candidates))
            if self.hard_negative_fraction > 0 and count:
                negatives = self._draw_with_hard(candidates, present, count, rng)
            else:
                negatives = sorted(rng.choice(candidates, count, replace=False).tolist())

        cap = self.max_queries_per_image
        if cap is not None and len(positives) + len(negatives) > cap:
            keep_negatives = round(cap * len(negatives) / (len(positives) + len(negatives)))
            keep_positives = min(len(positives), cap - keep_negatives)
            keep_negatives = cap - keep_positives
            positives = sorted(rng.choice(positives, keep_positives, replace=False).tolist())
            negatives = sorted(rng.choice(negatives, keep_negatives, replace=False).tolist())
        return positives, negatives

    def _draw_with_hard(self, candidates: np.ndarray, present: set[int], count: int,
                        rng: np.random.Generator) -> list[int]:
        """`count` negatives from `candidates`, a `hard_negative_fraction` share confusable."""
        confusable = set().union(*(self._confusable.get(c, set()) for c in present))
        hard_pool = candidates[np.isin(candidates, sorted(confusable))]
        expected = self.hard_negative_fraction * count
        n_hard = math.floor(expected) + int(rng.random() < expected - math.floor(expected))
        hard = rng.choice(hard_pool, min(n_hard, len(hard_pool)), replace=False)
        rest = candidates[~np.isin(candidates, hard)]
        easy = rng.choice(rest, count - len(hard), replace=False)
        return sorted(int(c) for c in np.concatenate([hard, easy]))

    def _load(self, index: int, draw: int = 0) -> FindQuerySample:
        record = self.records[index]
        image = read_image(record)
        positives, negatives = self.select_queries(record, self._rng(index, draw))
        wanted = set(positives)
        instances = [a for a in record.annotations if int(a["category_id"]) in wanted]
        if instances:
            masks = torch.from_numpy(
                np.stack(
                    [
                        decode_segmentation(a["segmentation"], record.height, record.width)
                        for a in instances
                    ]
                )
            )
        else:
            masks = torch.zeros(0, record.height, record.width, dtype=torch.bool)
        # Random augmentations seeded by (seed, draw, index), not by the loading worker's RNG:
        # a resumed run (fresh workers) reproduces them (data/resumable_loader.py).
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(np.random.SeedSequence([self.seed, draw, index, 1])
                                  .generate_state(1, np.uint64)[0] >> 1))
            out = self.transform(image, masks)

        # Instances emptied by cropping disappear; a positive can thereby become a negative.
        new_row = {int(old): new for new, old in enumerate(out.kept.tolist())}
        category_ids = positives + negatives
        target_rows = [
            [
                new_row[k]
                for k, a in enumerate(instances)
                if int(a["category_id"]) == c and k in new_row
            ]
            for c in category_ids
        ]
        annotation_ids = torch.as_tensor([int(a["id"]) for a in instances], dtype=torch.long)
        return FindQuerySample(
            image=out.image,
            masks=out.masks,
            boxes_cxcywh=out.boxes_cxcywh,
            annotation_ids=annotation_ids[out.kept],
            prompts=[self.category_names[c] for c in category_ids],
            category_ids=category_ids,
            target_rows=target_rows,
            is_exhaustive=[c not in record.not_exhaustive_category_ids for c in category_ids],
            image_id=record.image_id,
            file_name=record.file_name,
            orig_size=(record.height, record.width),
            valid_size=out.valid_size,
            gt_annotations=original_frame_annotations(record) if self.eval_annotations else None,
        )

    def __getitem__(self, index: int) -> FindQuerySample:
        """Load item `index`; an undecodable image is counted and the next image returned.

        `index` may carry a sampler draw: `draw * len(self) + i` (`ResumableRandomSampler`).
        """
        draw, index = divmod(int(index), len(self))
        for attempt in range(min(self.max_load_retries, len(self))):
            current = (index + attempt) % len(self)
            try:
                return self._load(current, draw)
            except UnreadableImageError as err:
                if self.strict:
                    raise DataIssueError(f"{err} (strict mode)") from None
                self.load_issues.report("unreadable_image", str(err))
                log.warning("skipping unreadable image: %s", err)
        raise RuntimeError(
            f"{self.ann_file}: {self.max_load_retries} consecutive unreadable images from index "
            f"{index}; {self.load_issues.summary()}"
        )
