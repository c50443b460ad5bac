import dataclasses
import threading

import torch

from region_sam3.data.batch import collate_find_queries
from region_sam3.data.coco import FindQueryDataset
from region_sam3.data.sam3_adapter import to_sam3_batch
from region_sam3.data.synthetic import ensure_synthetic_dataset


def test_all_negative_batch_gives_empty_targets(coco_files):
    image_dir, ann_file, _ = coco_files
    dataset = FindQueryDataset(image_dir, ann_file, negative_ratio=2.0)
    batch = collate_find_queries([dataset[2]])  # image 3 has no annotations
    assert batch.is_negative.all() and batch.masks.shape == (0, 40, 50)
    target = to_sam3_batch(batch, "cpu", semantic=True).find_targets[0]
    assert target.boxes.shape == (0, 4) and target.boxes_padded.shape == (2, 0, 4)
    assert target.object_ids_padded.shape == (2, 0) and target.num_boxes.tolist() == [0, 0]
    assert target.semantic_segments.shape == (2, 40, 50) and not target.semantic_segments.any()


def test_semantic_segments_are_the_union_of_each_querys_instances(coco_files):
    image_dir, ann_file, _ = coco_files
    dataset = FindQueryDataset(image_dir, ann_file, all_categories=True)
    batch = collate_find_queries([dataset[0], dataset[1]])
    semantic = to_sam3_batch(batch, "cpu", semantic=True).find_targets[0].semantic_segments
    assert semantic.shape == (batch.num_queries, *batch.images.shape[-2:])
    for query in range(batch.num_queries):
        rows = batch.masks[batch.target_query_index == query]
        expected = rows.any(dim=0) if len(rows) else torch.zeros_like(semantic[query])
        assert torch.equal(semantic[query], expected), f"query {query} ({batch.prompts[query]})"
    assert semantic[batch.num_targets > 1].any()  # a query with several instances is covered


def test_mixed_batch_text_dedup_and_image_index(coco_files):
    image_dir, ann_file, _ = coco_files
    dataset = FindQueryDataset(image_dir, ann_file, all_categories=True)
    batch = collate_find_queries([dataset[0], dataset[1]])
    sam3_batch = to_sam3_batch(batch, "cpu")
    stage = sam3_batch.find_inputs[0]
    assert sorted(sam3_batch.find_text_batch) == ["cat", "dog", "person", "traffic light"]
    # image 1: crowd "person" is neither queried nor negative; image 2 gets it as a negative
    assert stage.img_ids.tolist() == [0] * 3 + [1] * 4
    assert len(stage.text_ids) == 7 and stage.text_ids.max() == 3
    assert stage.object_ids[0] == batch.target_object_index[:2].tolist()
    assert torch.equal(
        sam3_batch.find_metadatas[0].coco_image_id, torch.tensor([1, 1, 1, 2, 2, 2, 2])
    )
    # the collator's host copy of each target's image row (distillation groups by it)
    expected = tuple(batch.query_image_index[batch.target_query_index].tolist())
    assert batch.target_image_host == expected and set(expected) == {0, 1}
    assert dataclasses.replace(batch, target_image_host=None).host_target_images() == expected


def test_concurrent_generation_is_safe(tmp_path, make_cfg):
    cfg = make_cfg(image_size=32)
    results, errors = [], []

    def generate():
        try:
            results.append(ensure_synthetic_dataset(tmp_path, "small", cfg))
        except Exception as err:  # noqa: BLE001 - surfaced by the assert below
            errors.append(err)

    threads = [threading.Thread(target=generate) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len(set(results)) == 1
    image_dir, ann_file = results[0]
    assert ann_file.is_file() and len(list(image_dir.glob("*.png"))) == 2
    assert not list(ann_file.parent.parent.glob(".tmp-*"))
