"""Fresh-scene stream for stage-1 pretraining (region_sam3.data.synthetic_stream)."""

from __future__ import annotations

import torch

from region_sam3.data.synthetic import SyntheticConfig, render_scene
from region_sam3.data.synthetic_stream import (
    EpochStreamSampler,
    SyntheticStreamDataModule,
    scene_to_tensors,
)


def test_epochs_never_repeat_and_are_reproducible():
    sampler = EpochStreamSampler(scenes_per_epoch=10)
    sampler.set_epoch(0)
    first = list(sampler)
    sampler.set_epoch(1)
    second = list(sampler)
    assert first == list(range(10)) and second == list(range(10, 20))
    again = EpochStreamSampler(scenes_per_epoch=10)
    again.set_epoch(1)  # a resumed run at epoch 1 sees what the uninterrupted one saw
    assert list(again) == second


def test_ranks_take_disjoint_slices_covering_the_epoch():
    shards = []
    for rank in range(3):
        s = EpochStreamSampler(scenes_per_epoch=10, rank=rank, world_size=3)
        s.set_epoch(2)
        shards.append(list(s))
        assert len(s) == len(shards[-1])
    flat = sorted(i for shard in shards for i in shard)
    assert flat == list(range(20, 30))


def test_labels_are_the_owner_map_at_the_mask_grid():
    cfg = SyntheticConfig(image_size=64)
    scene = render_scene(cfg, "val", 3)
    item = scene_to_tensors(scene, label_size=64)  # same size: labels equal the owner map
    assert item["image"].shape == (3, 64, 64)
    for mask, category_id in zip(scene.masks, scene.category_ids):
        assert (item["labels"][torch.from_numpy(mask)] == category_id).all()
    union = torch.from_numpy(scene.masks.any(0))
    assert (item["labels"][~union] == 0).all()


def test_val_batches_match_the_split_and_train_uses_train_spec():
    dm = SyntheticStreamDataModule(synthetic={"image_size": 64}, label_size=16, batch_size=2,
                                   eval_batch_size=3, scenes_per_epoch=4, val_images=3)
    assert dm.cfg.splits["stream"] == dm.cfg.splits["train"]
    batch = next(iter(dm.val_dataloader()))
    assert batch["image"].shape == (3, 3, 64, 64) and batch["labels"].shape == (3, 16, 16)
    expected = render_scene(dm.cfg, "val", 1)
    assert batch["category_ids"][1].tolist() == expected.category_ids
    train = list(dm.train_dataloader())
    assert len(train) == 2 and train[0]["image"].shape == (2, 3, 64, 64)
