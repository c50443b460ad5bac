"""Per-image samples and the packed batch of find queries that the rest of the project consumes.

A *find query* is one (image, noun phrase) pair together with every instance of that phrase in
the image; a query with zero instances is a negative. Each dataset item is one image with all
its queries; collation packs queries and targets across images.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch


@dataclass
class FindQuerySample:
    """One image with its find queries, after transforms.

    Instances are stored once per image; each query lists the rows of `masks`/`boxes_cxcywh`
    that belong to it (a query with an empty list is a negative).
    """

    image: torch.Tensor  # [3,H,W] float, normalised with mean/std 0.5
    masks: torch.Tensor  # [K,H,W] bool, instances at model resolution
    boxes_cxcywh: torch.Tensor  # [K,4] float in [0,1], relative to the H,W canvas
    annotation_ids: torch.Tensor  # [K] long, COCO annotation ids
    prompts: list[str]  # [Q] category names used as text prompts
    category_ids: list[int]  # [Q] COCO category ids
    target_rows: list[list[int]]  # [Q] rows of `masks` owned by each query
    is_exhaustive: list[bool]  # [Q] False for LVIS not-exhaustive categories
    image_id: int
    file_name: str
    orig_size: tuple[int, int]  # (h, w) of the file on disk
    valid_size: tuple[int, int]  # (h, w) of the image content inside the canvas (< H,W if padded)
    # Evaluation only: the image's COCO annotations in the original frame (instances and crowd
    # regions, segmentation as compressed RLE), see `FindQueryDataset(eval_annotations=True)`.
    gt_annotations: list[dict] | None = None


@dataclass
class FindQueryBatch:
    """A collated batch: images, their find queries, and the packed targets of those queries.

    Shapes: N_img images, B queries, T targets (instances) over all queries.
    Targets are packed query by query: the targets of query b are the `num_targets[b]`
    consecutive rows starting at `num_targets[:b].sum()`.
    """

    images: torch.Tensor  # [N_img,3,H,W] float, normalised with mean/std 0.5
    query_image_index: torch.Tensor  # [B] long, row of `images` each query looks at
    prompts: list[str]  # [B]
    category_ids: torch.Tensor  # [B] long
    num_targets: torch.Tensor  # [B] long
    is_negative: torch.Tensor  # [B] bool, num_targets == 0
    is_exhaustive: torch.Tensor  # [B] bool
    boxes_cxcywh: torch.Tensor  # [T,4] float in [0,1]
    masks: torch.Tensor  # [T,H,W] bool
    target_query_index: torch.Tensor  # [T] long, query each target belongs to
    target_object_index: torch.Tensor  # [T] long, index of the instance within its image
    annotation_ids: torch.Tensor  # [T] long, COCO annotation ids
    image_ids: torch.Tensor  # [N_img] long, COCO image ids
    orig_sizes: torch.Tensor  # [N_img,2] long, (h, w) on disk
    valid_sizes: torch.Tensor  # [N_img,2] long, (h, w) of content inside the H,W canvas
    file_names: list[str]  # [N_img]
    gt_annotations: list[list[dict]] | None = None  # [N_img] original-frame COCO anns (eval)
    # Host copies of `num_targets` and `target_object_index` (Python ints, set by the collator).
    # `to_sam3_batch` needs them as ints (padded width, FindStage.object_ids); reading them
    # back from the GPU would be a host-device sync per step. `.to()` carries them unchanged.
    num_targets_host: tuple[int, ...] | None = None
    target_object_host: tuple[int, ...] | None = None
    # [T] host copy of `query_image_index[target_query_index]` (image row of each target): the
    # distillation step groups targets per image with it (teacher forward, no device read).
    target_image_host: tuple[int, ...] | None = None

    @property
    def num_queries(self) -> int:
        return len(self.prompts)

    def host_targets(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """`(num_targets, target_object_index)` as Python ints, without a device read when the
        collator filled the host copies (otherwise one device->host copy of both at once)."""
        if self.num_targets_host is not None and self.target_object_host is not None:
            return self.num_targets_host, self.target_object_host
        both = torch.cat([self.num_targets, self.target_object_index]).tolist()
        return tuple(both[:self.num_queries]), tuple(both[self.num_queries:])

    def host_target_images(self) -> tuple[int, ...]:
        """Image row of every target (`[T]` Python ints), without a device read when the
        collator filled `target_image_host` (otherwise one device->host copy)."""
        if self.target_image_host is not None:
            return self.target_image_host
        return tuple(self.query_image_index[self.target_query_index].tolist())

    def _map_tensors(self, fn) -> FindQueryBatch:
        changes = {
            f.name: fn(getattr(self, f.name))
            for f in fields(self)
            if isinstance(getattr(self, f.name), torch.Tensor)
        }
        return replace(self, **changes)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> FindQueryBatch:
        return self._map_tensors(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> FindQueryBatch:
        """Called by the DataLoader when `pin_memory=True` (only used with CUDA)."""
        return self._map_tensors(lambda t: t.pin_memory())


def collate_find_queries(samples: list[FindQuerySample]) -> FindQueryBatch:
    """Pack per-image samples into a `FindQueryBatch` (all images must share one H,W)."""
    if not samples:
        raise ValueError("collate_find_queries: empty list of samples")
    height, width = samples[0].image.shape[-2:]
    for sample in samples:
        if sample.image.shape[-2:] != (height, width):
            raise ValueError(
                f"collate_find_queries: image {sample.file_name} has size "
                f"{tuple(sample.image.shape[-2:])}, expected {(height, width)}"
            )

    query_image_index: list[int] = []
    prompts: list[str] = []
    category_ids: list[int] = []
    num_targets: list[int] = []
    is_exhaustive: list[bool] = []
    target_query_index: list[int] = []
    mask_chunks: list[torch.Tensor] = []
    box_chunks: list[torch.Tensor] = []
    ann_chunks: list[torch.Tensor] = []
    object_rows: list[int] = []
    target_images: list[int] = []

    for image_index, sample in enumerate(samples):
        for prompt, category_id, rows, exhaustive in zip(
            sample.prompts, sample.category_ids, sample.target_rows, sample.is_exhaustive
        ):
            query_index = len(prompts)
            query_image_index.append(image_index)
            prompts.append(prompt)
            category_ids.append(category_id)
            num_targets.append(len(rows))
            is_exhaustive.append(exhaustive)
            target_query_index.extend([query_index] * len(rows))
            object_rows.extend(rows)
            target_images.extend([image_index] * len(rows))
            if rows:
                row_index = torch.as_tensor(rows, dtype=torch.long)
                mask_chunks.append(sample.masks[row_index])
                box_chunks.append(sample.boxes_cxcywh[row_index])
                ann_chunks.append(sample.annotation_ids[row_index])

    num_targets_t = torch.as_tensor(num_targets, dtype=torch.long)
    return FindQueryBatch(
        images=torch.stack([s.image for s in samples]),
        query_image_index=torch.as_tensor(query_image_index, dtype=torch.long),
        prompts=prompts,
        category_ids=torch.as_tensor(category_ids, dtype=torch.long),
        num_targets=num_targets_t,
        is_negative=num_targets_t == 0,
        is_exhaustive=torch.as_tensor(is_exhaustive, dtype=torch.bool),
        boxes_cxcywh=torch.cat(box_chunks) if box_chunks else torch.zeros(0, 4),
        masks=(
            torch.cat(mask_chunks)
            if mask_chunks
            else torch.zeros(0, height, width, dtype=torch.bool)
        ),
        target_query_index=torch.as_tensor(target_query_index, dtype=torch.long),
        target_object_index=torch.as_tensor(object_rows, dtype=torch.long),
        annotation_ids=(torch.cat(ann_chunks) if ann_chunks else torch.zeros(0, dtype=torch.long)),
        image_ids=torch.as_tensor([s.image_id for s in samples], dtype=torch.long),
        orig_sizes=torch.as_tensor([s.orig_size for s in samples], dtype=torch.long),
        valid_sizes=torch.as_tensor([s.valid_size for s in samples], dtype=torch.long),
        file_names=[s.file_name for s in samples],
        gt_annotations=(
            [s.gt_annotations for s in samples]
            if all(s.gt_annotations is not None for s in samples)
            else None
        ),
        num_targets_host=tuple(num_targets),
        target_object_host=tuple(object_rows),
        target_image_host=tuple(target_images),
    )
