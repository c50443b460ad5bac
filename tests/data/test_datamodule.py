from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from region_sam3.data.batch import FindQueryBatch
from region_sam3.data.datamodule import FindQueryDataModule
from region_sam3.data.sam3_adapter import to_sam3_batch

TINY_SPLITS = {"train": {"num_images": 6}, "val": {"num_images": 4}, "crowded": {"num_images": 2}}


def _datamodule(root, **overrides) -> FindQueryDataModule:
    settings = dict(
        synthetic={"root": str(root), "image_size": 64, "seed": 3, "splits": TINY_SPLITS},
        resolution=64,
        batch_size=2,
        num_workers=0,
        max_queries_per_image=4,
        augmentation={"crop": "lsj"},
    )
    return FindQueryDataModule(**{**settings, **overrides})


def _check_batch(batch: FindQueryBatch, resolution: int) -> None:
    num_queries, num_targets = batch.num_queries, batch.masks.shape[0]
    assert (
        batch.images.shape[1:] == (3, resolution, resolution)
        and batch.images.dtype == torch.float32
    )
    assert batch.query_image_index.shape == batch.category_ids.shape == (num_queries,)
    assert int(batch.num_targets.sum()) == num_targets == batch.boxes_cxcywh.shape[0]
    assert torch.equal(batch.is_negative, batch.num_targets == 0)
    assert batch.masks.dtype == torch.bool and batch.masks.shape[1:] == (resolution, resolution)
    assert ((batch.boxes_cxcywh >= 0) & (batch.boxes_cxcywh <= 1)).all()
    assert torch.equal(
        batch.target_query_index,
        torch.repeat_interleave(torch.arange(num_queries), batch.num_targets),
    )
    assert batch.orig_sizes.shape == (batch.images.shape[0], 2)
    assert len(batch.file_names) == batch.images.shape[0] == batch.image_ids.shape[0]


def test_train_and_val_batches(tmp_path):
    datamodule = _datamodule(tmp_path)
    datamodule.prepare_data()
    datamodule.setup("fit")
    assert len(datamodule.category_names) == 30 and datamodule.category_names[1] == "red circle"
    train = next(iter(datamodule.train_dataloader()))
    _check_batch(train, 64)
    assert train.images.shape[0] == 2 and train.num_queries <= 8
    val = next(iter(datamodule.val_dataloader()))
    _check_batch(val, 64)
    assert val.num_queries == 2 * 30  # evaluation queries every category
    assert val.is_negative.sum() >= 2 * 30 - 2 * 10


def test_test_split_selectable_and_unknown_split_named(tmp_path):
    datamodule = _datamodule(tmp_path, test_split="crowded", eval_batch_size=1)
    datamodule.setup("test")
    batch = next(iter(datamodule.test_dataloader()))
    assert batch.file_names[0].startswith("crowded_") and batch.images.shape[0] == 1
    with pytest.raises(ValueError, match="unknown split 'nope'"):
        _datamodule(tmp_path, test_split="nope").setup("test")


def test_several_test_splits_give_one_loader_each(tmp_path):
    datamodule = _datamodule(tmp_path, test_split=["val", "crowded"], eval_batch_size=1)
    datamodule.prepare_data()
    assert datamodule.test_roles == ["test/val", "test/crowded"]
    loaders = datamodule.test_dataloader()
    assert [next(iter(loader)).file_names[0].split("_")[0] for loader in loaders] == [
        "val", "crowded"]
    # predict uses the first split only
    assert next(iter(datamodule.predict_dataloader())).file_names[0].startswith("val_")
    with pytest.raises(ValueError, match="distinct splits"):
        _datamodule(tmp_path, test_split=["val", "val"])


def test_workers_and_pin_memory_settings(tmp_path):
    datamodule = _datamodule(tmp_path, num_workers=2)
    datamodule.setup("validate")
    loader = datamodule.val_dataloader()
    assert loader.persistent_workers and loader.num_workers == 2
    assert loader.pin_memory == torch.cuda.is_available()


def test_to_sam3_batch_structure(tmp_path):
    datamodule = _datamodule(tmp_path)
    datamodule.setup("fit")
    batch = next(iter(datamodule.train_dataloader()))
    sam3_batch = to_sam3_batch(batch, "cpu")
    num_queries, num_targets = batch.num_queries, batch.masks.shape[0]
    stage, target, meta = (
        sam3_batch.find_inputs[0],
        sam3_batch.find_targets[0],
        sam3_batch.find_metadatas[0],
    )
    assert sam3_batch.img_batch is not None and sam3_batch.img_batch.shape == batch.images.shape
    assert len(sam3_batch.find_text_batch) == len(set(batch.prompts))
    assert [sam3_batch.find_text_batch[i] for i in stage.text_ids.tolist()] == batch.prompts
    assert stage.img_ids.dtype == torch.long and torch.equal(stage.img_ids, batch.query_image_index)
    assert stage.input_boxes.shape == (0, num_queries, 4)
    assert (
        stage.input_boxes_mask.shape == (num_queries, 0)
        and stage.input_boxes_mask.dtype == torch.bool
    )
    assert stage.input_boxes_label.shape == (0, num_queries)
    assert stage.input_points.numel() == 0
    max_targets = int(batch.num_targets.max())
    assert target.boxes.shape == (num_targets, 4) and target.boxes.dtype == torch.float32
    assert target.boxes_padded.shape == (num_queries, max_targets, 4)
    assert target.object_ids_padded.shape == (num_queries, max_targets)
    assert target.segments.shape == (num_targets, 64, 64) and target.segments.dtype == torch.bool
    assert target.is_valid_segment.all() and target.is_exhaustive.shape == (num_queries,)
    assert torch.equal(target.num_boxes, batch.num_targets)
    offset = 0
    for q, count in enumerate(batch.num_targets.tolist()):
        assert torch.equal(target.boxes_padded[q, :count], target.boxes[offset : offset + count])
        assert (target.object_ids_padded[q, count:] == -1).all()
        offset += count
    assert meta.original_size.shape == (num_queries, 2)
    assert torch.equal(meta.original_category_id.long(), batch.category_ids)


def test_tiny_sam3_forward_accepts_adapter_output(tmp_path):
    from helpers import build_tiny_sam3, last_stage_output

    datamodule = _datamodule(tmp_path, resolution=224, max_queries_per_image=2)
    datamodule.setup("fit")
    batch = next(iter(datamodule.train_dataloader()))
    model = build_tiny_sam3()
    model.train()
    out = last_stage_output(model(to_sam3_batch(batch, "cpu")))
    assert out["pred_logits"].shape[0] == batch.num_queries
    assert "indices" in out  # SAM3's matcher consumed the targets


def test_hydra_configs_instantiate(tmp_path):
    conf_dir = Path(__file__).resolve().parents[2] / "conf"
    with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
        for name in ("synthetic", "coco", "lvis"):
            cfg = compose(overrides=[f"+data={name}", f"+paths.data_dir={tmp_path}"])
            datamodule = instantiate(cfg.data)
            assert isinstance(datamodule, FindQueryDataModule)
            assert datamodule.hparams.seed == 0  # falls back when the root config has no seed
            if name == "synthetic":
                assert datamodule.synthetic["root"] == f"{tmp_path}/synthetic"
                assert datamodule.hparams.resolution == 224 and not datamodule.splits
            else:
                assert datamodule.synthetic is None and datamodule.hparams.resolution == 1008
                assert datamodule.splits["val"]["ann_file"].startswith(str(tmp_path))
        lvis = compose(overrides=["+data=lvis", f"+paths.data_dir={tmp_path}"])
        assert lvis.data.splits.train.ann_file.endswith("lvis/lvis_v1_train.json")
