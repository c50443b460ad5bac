"""The one place where a project `FindQueryBatch` becomes the `BatchedDatapoint` SAM3 consumes.

Mirrors `sam3.train.data.collator.collate_fn_api` for a single stage of text-only find queries:
texts are de-duplicated into `find_text_batch` and referenced by `text_ids`; geometric prompts
are empty; targets are packed (`boxes`) and padded (`boxes_padded`) as the matcher expects.
"""

from __future__ import annotations

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
    packed: torch.Tensor, counts: torch.Tensor, fill_value: float
) -> torch.Tensor:
    """[T,*] packed rows, [B] counts -> [B,max(counts),*] padded with `fill_value`."""
    num_queries = counts.shape[0]
    max_count = int(counts.max()) if num_queries else 0
    padded = packed.new_full((num_queries, max_count, *packed.shape[1:]), fill_value)
    if packed.shape[0]:
        query_index = torch.repeat_interleave(
            torch.arange(num_queries, device=counts.device), counts
        )
        starts = torch.cumsum(counts, 0) - counts
        slot = torch.arange(packed.shape[0], device=counts.device) - starts[query_index]
        padded[query_index, slot] = packed
    return padded


def semantic_masks(batch: FindQueryBatch) -> torch.Tensor:
    """Per query, the union of its instance masks: [B,H,W] bool (all False for negatives)."""
    height, width = batch.images.shape[-2:]
    if batch.num_queries == 0:
        return torch.zeros(0, height, width, dtype=torch.bool, device=batch.images.device)
    # Targets are packed query by query, so a split by `num_targets` groups them per query.
    per_query = torch.split(batch.masks, batch.num_targets.tolist())
    return torch.stack([masks.any(dim=0) for masks in per_query])


def to_sam3_batch(batch: FindQueryBatch, device: torch.device | str) -> BatchedDatapoint:
    """Build the `BatchedDatapoint` that `Sam3Image.forward` reads, in train and eval mode.

    Shapes (B queries, T targets, N_img images):
      img_batch [N_img,3,H,W]; find_inputs[0].img_ids/text_ids [B];
      input_boxes [0,B,4], input_boxes_mask [B,0], input_boxes_label [0,B];
      input_points [B,0,257], input_points_mask [B,0];
      find_targets[0].boxes [T,4] cxcywh in [0,1], boxes_padded [B,max_n,4], num_boxes [B],
      segments [T,H,W] bool, semantic_segments [B,H,W] bool (union per query),
      is_valid_segment [T], object_ids [T], object_ids_padded [B,max_n].
    """
    batch = batch.to(device, non_blocking=True)
    num_queries = batch.num_queries

    text_batch: list[str] = []
    text_index: dict[str, int] = {}
    text_ids = []
    for prompt in batch.prompts:
        if prompt not in text_index:
            text_index[prompt] = len(text_batch)
            text_batch.append(prompt)
        text_ids.append(text_index[prompt])

    find_input = FindStage(
        img_ids=batch.query_image_index,
        text_ids=torch.as_tensor(text_ids, dtype=torch.long, device=device),
        input_boxes=torch.zeros(0, num_queries, 4, device=device),
        input_boxes_mask=torch.zeros(num_queries, 0, dtype=torch.bool, device=device),
        input_boxes_label=torch.zeros(0, num_queries, dtype=torch.long, device=device),
        input_points=torch.zeros(num_queries, 0, POINT_EMBEDDING_DIM, device=device),
        input_points_mask=torch.zeros(num_queries, 0, dtype=torch.bool, device=device),
        object_ids=[
            batch.target_object_index[batch.target_query_index == q].tolist()
            for q in range(num_queries)
        ],
    )

    boxes = batch.boxes_cxcywh.float()
    object_ids = batch.target_object_index
    find_target = BatchedFindTarget(
        num_boxes=batch.num_targets,
        boxes=boxes,
        boxes_padded=_packed_to_padded(boxes, batch.num_targets, 0.0),
        # Only filled for hybrid one-to-many matching with repeats > 0 upstream.
        repeated_boxes=torch.zeros(0, device=device),
        segments=batch.masks,
        semantic_segments=semantic_masks(batch),
        is_valid_segment=torch.ones(boxes.shape[0], dtype=torch.bool, device=device),
        is_exhaustive=batch.is_exhaustive,
        object_ids=object_ids,
        object_ids_padded=_packed_to_padded(object_ids, batch.num_targets, -1),
    )

    image_index = batch.query_image_index
    first_object_id = torch.full((num_queries,), -1, dtype=torch.long, device=device)
    if object_ids.numel():
        starts = torch.cumsum(batch.num_targets, 0) - batch.num_targets
        has_target = batch.num_targets > 0
        first_object_id[has_target] = object_ids[starts[has_target]]
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
