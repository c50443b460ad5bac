"""The one place where a project `FindQueryBatch` becomes the `BatchedDatapoint` SAM3 consumes.

Mirrors `sam3.train.data.collator.collate_fn_api` for a single stage of text-only find queries:
texts are de-duplicated into `find_text_batch` and referenced by `text_ids`; geometric prompts
are empty; targets are packed (`boxes`) and padded (`boxes_padded`) as the matcher expects.
"""

from __future__ import annotations

import warnings

import torch
from sam3.model.data_misc import (
    BatchedDatapoint,
    BatchedFindTarget,
    BatchedInferenceMetadata,
    FindStage,
)

from region_sam3.data.batch import FindQueryBatch

# Width of SAM3's (unused here) point-prompt embedding, as in the upstream collator default.
POINT_EMBEDDING_DIM = 257


def _packed_to_padded(
    packed: torch.Tensor, counts: torch.Tensor, max_count: int, fill_value: float
) -> torch.Tensor:
    """[T,*] packed rows, [B] counts -> [B,max_count,*] padded with `fill_value`.

    `max_count` (= max(counts)) comes from the host so the shape needs no device read; the
    scatter indices are computed on the tensors' device (no sync: output sizes are known).
    """
    num_queries = counts.shape[0]
    padded = packed.new_full((num_queries, max_count, *packed.shape[1:]), fill_value)
    num_rows = packed.shape[0]
    if num_rows:
        query_index = torch.repeat_interleave(
            torch.arange(num_queries, device=counts.device), counts, output_size=num_rows
        )
        starts = torch.cumsum(counts, 0) - counts
        slot = torch.arange(num_rows, device=counts.device) - starts[query_index]
        padded[query_index, slot] = packed
    return padded


def semantic_masks(batch: FindQueryBatch) -> torch.Tensor:
    """Per query, the union of its instance masks: [B,H,W] bool (all False for negatives).

    One `index_reduce_` (max) over the packed targets on their device: no per-query split and
    no host read. Memory: [B,H,W] uint8 + the [T,H,W] uint8 view of the masks; at 1008 px with
    80 prompts/image that is 81 MB per image, so it is built only when a semantic loss is on.
    """
    height, width = batch.images.shape[-2:]
    device = batch.masks.device
    union = torch.zeros(batch.num_queries, height, width, dtype=torch.uint8, device=device)
    if batch.masks.shape[0]:
        with warnings.catch_warnings():  # "index_reduce() is in beta": stable for amax
            warnings.simplefilter("ignore", UserWarning)
            union.index_reduce_(0, batch.target_query_index, batch.masks.to(torch.uint8), "amax")
    return union.bool()


def to_sam3_batch(
    batch: FindQueryBatch, device: torch.device | str, *, semantic: bool = False
) -> BatchedDatapoint:
    """Build the `BatchedDatapoint` that `Sam3Image.forward` reads, in train and eval mode.

    Host-device syncs: none when `batch` came from `collate_find_queries` (its host copies of
    the target counts give the padded width and `object_ids`; the few index tensors made from
    Python values are built on the CPU and copied with `non_blocking=True`, which does not wait
    for the GPU queue). A batch without host copies costs one device->host read.

    Args:
        batch: on the CPU or already on `device`.
        device: target device.
        semantic: also build `semantic_segments` (per-query union of the instance masks), only
            needed by SAM3's semantic-head loss (pass True when its weight is non-zero); False
            (default: evaluation, the usual training) leaves it None.

    Shapes (B queries, T targets, N_img images):
      img_batch [N_img,3,H,W]; find_inputs[0].img_ids/text_ids [B];
      input_boxes [0,B,4], input_boxes_mask [B,0], input_boxes_label [0,B];
      input_points [B,0,257], input_points_mask [B,0];
      find_targets[0].boxes [T,4] cxcywh in [0,1], boxes_padded [B,max_n,4], num_boxes [B],
      segments [T,H,W] bool, semantic_segments [B,H,W] bool (union per query) or None,
      is_valid_segment [T], object_ids [T], object_ids_padded [B,max_n].
    """
    num_targets_host, object_index_host = batch.host_targets()
    batch = batch.to(device, non_blocking=True)
    num_queries = batch.num_queries
    max_count = max(num_targets_host, default=0)

    text_batch: list[str] = []
    text_index: dict[str, int] = {}
    text_ids = []
    for prompt in batch.prompts:
        if prompt not in text_index:
            text_index[prompt] = len(text_batch)
            text_batch.append(prompt)
        text_ids.append(text_index[prompt])
    # Per query, the image-level object rows of its targets (used by SAM3's video tracker only).
    object_ids, start = [], 0
    for count in num_targets_host:
        object_ids.append(list(object_index_host[start:start + count]))
        start += count

    find_input = FindStage(
        img_ids=batch.query_image_index,
        text_ids=torch.as_tensor(text_ids, dtype=torch.long).to(device, non_blocking=True),
        input_boxes=torch.zeros(0, num_queries, 4, device=device),
        input_boxes_mask=torch.zeros(num_queries, 0, dtype=torch.bool, device=device),
        input_boxes_label=torch.zeros(0, num_queries, dtype=torch.long, device=device),
        input_points=torch.zeros(num_queries, 0, POINT_EMBEDDING_DIM, device=device),
        input_points_mask=torch.zeros(num_queries, 0, dtype=torch.bool, device=device),
        object_ids=object_ids,
    )

    boxes = batch.boxes_cxcywh.float()
    object_ids = batch.target_object_index
    find_target = BatchedFindTarget(
        num_boxes=batch.num_targets,
        boxes=boxes,
        boxes_padded=_packed_to_padded(boxes, batch.num_targets, max_count, 0.0),
        # Only filled for hybrid one-to-many matching with repeats > 0 upstream.
        repeated_boxes=torch.zeros(0, device=device),
        segments=batch.masks,
        semantic_segments=semantic_masks(batch) if semantic else None,
        is_valid_segment=torch.ones(boxes.shape[0], dtype=torch.bool, device=device),
        is_exhaustive=batch.is_exhaustive,
        object_ids=object_ids,
        object_ids_padded=_packed_to_padded(object_ids, batch.num_targets, max_count, -1),
    )

    image_index = batch.query_image_index
    first_object_id = torch.full((num_queries,), -1, dtype=torch.long, device=device)
    if object_ids.shape[0]:
        # torch.where instead of boolean-mask indexing (which would read the count back).
        starts = (torch.cumsum(batch.num_targets, 0) - batch.num_targets).clamp(
            max=object_ids.shape[0] - 1)
        first_object_id = torch.where(batch.num_targets > 0, object_ids[starts], first_object_id)
    metadata = BatchedInferenceMetadata(
        coco_image_id=batch.image_ids[image_index],
        original_image_id=batch.image_ids[image_index],
        original_category_id=batch.category_ids.to(torch.int),
        original_size=batch.orig_sizes[image_index],
        object_id=first_object_id,
        frame_index=torch.zeros(num_queries, dtype=torch.long, device=device),
        is_conditioning_only=[False] * num_queries,
    )
    return BatchedDatapoint(
        img_batch=batch.images,
        find_text_batch=text_batch,
        find_inputs=[find_input],
        find_targets=[find_target],
        find_metadatas=[metadata],
        raw_images=None,
    )
