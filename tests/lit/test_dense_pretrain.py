"""Stage-1 dense pretraining of the vision backbone (region_sam3.lit.dense_pretrain)."""

from __future__ import annotations

import pytest
import torch
from helpers import compose_sam3
from omegaconf import OmegaConf

from region_sam3.data.synthetic import SyntheticConfig, render_scene
from region_sam3.data.synthetic_stream import collate_scenes, scene_to_tensors
from region_sam3.lit.dense_pretrain import (
    VISION_PREFIX,
    DensePretrainModule,
    export_backbone,
    object_logits,
)

SYNTHETIC = {"image_size": 224, "shapes": ["circle", "cross"], "colours": ["red", "blue"]}


def _module(name: str = "tiny_p7", freeze: list[str] | None = None,
            object_loss_weight: float = 1.0) -> DensePretrainModule:
    torch.manual_seed(0)
    sam3 = compose_sam3(name, [f"freeze={freeze or []}"])
    return DensePretrainModule(sam3=OmegaConf.to_container(sam3), synthetic=SYNTHETIC,
                               object_loss_weight=object_loss_weight)


def test_a_frozen_backbone_fails_loudly():
    with pytest.raises(ValueError, match="frozen vision backbone.*backbone.vision_backbone"):
        _module("tiny", freeze=["backbone.vision_backbone.*"])


@pytest.mark.parametrize("name", ["tiny", "tiny_p7"])
def test_levels_keep_the_tiny_mask_grid(name):
    module = _module(name)
    logits = module.level_logits(torch.zeros(1, 3, 224, 224))
    assert [x.shape[-1] for x in logits] == [64, 32, 16]
    assert all(x.shape[1] == 5 for x in logits)  # background + 4 categories


@pytest.mark.slow
def test_overfits_one_batch_and_the_probe_follows():
    cfg = SyntheticConfig(**SYNTHETIC)
    batch = collate_scenes([scene_to_tensors(render_scene(cfg, "val", i), 64) for i in range(2)])
    module = _module("tiny")
    opt = torch.optim.AdamW(module.parameters(), lr=3e-3)
    first = None
    for _ in range(60):
        loss = module._loss(module.level_logits(batch["image"]), batch)
        first = float(loss) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss) < 0.5 * first
    module.eval()
    module.on_validation_epoch_start()
    with torch.no_grad():
        logits = module.level_logits(batch["image"])
    for i in range(2):
        module.probes["fine"].update(logits[0][i], batch["masks"][i], batch["category_ids"][i])
    assert module.probes["fine"].compute()["colour_acc"] > 0.5


def test_exported_backbone_loads_into_sam3(tmp_path):
    from hydra.utils import instantiate

    module = _module("tiny_p7")
    ckpt = tmp_path / "stage1.ckpt"
    torch.save({"state_dict": module.state_dict()}, ckpt)
    out = export_backbone(ckpt, tmp_path / "backbone.pt")
    saved = torch.load(out, weights_only=False)["model"]
    assert saved and all(k.startswith(VISION_PREFIX) for k in saved)
    sam3 = instantiate(compose_sam3("tiny_p7", [f"checkpoint={out}", "strict=false"]))
    for key, value in sam3.backbone.vision_backbone.state_dict().items():
        assert torch.equal(value, saved[VISION_PREFIX + key]), key


def test_export_rejects_other_checkpoints(tmp_path):
    ckpt = tmp_path / "other.ckpt"
    torch.save({"state_dict": {"net.x": torch.zeros(1)}}, ckpt)
    with pytest.raises(ValueError, match="not a stage-1 checkpoint"):
        export_backbone(ckpt, tmp_path / "out.pt")


@pytest.mark.slow
def test_stage1_experiment_fast_dev_run(tmp_path):
    from helpers import CONF_DIR
    from hydra import compose, initialize_config_dir

    from region_sam3.tasks import train_task

    overrides = ["experiment=pretrain_tiny_stage1", f"paths.output_dir={tmp_path}",
                 f"paths.work_dir={tmp_path}", "~callbacks.progress_bar", "logger=csv",
                 "data.val_images=2", "data.batch_size=2", "++trainer.fast_dev_run=true",
                 "trainer.accelerator=cpu"]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    assert cfg.model.sam3.freeze == []
    metrics, objects = train_task(cfg)
    assert objects["trainer"].global_step == 1
    assert metrics["val/num_objects"] > 0 and 0.0 <= metrics["val/shape_acc"] <= 1.0
    assert "val/coarse/large/shape_acc" in metrics


def test_object_logits_average_each_visible_object():
    logits = torch.randn(2, 3, 4, 4)
    instances = torch.zeros(2, 4, 4, dtype=torch.long)
    instances[0, :2, :2] = 1  # image 0, object 0
    instances[0, 3, 3] = 2    # image 0, object 1
    # image 1: object 0 vanished at this grid (no pixel), object 1 is padding
    categories = torch.tensor([[5, 7], [3, 0]])
    pooled, target = object_logits(logits, instances, categories)
    assert target.tolist() == [-1, 5, 7, -1, -1, -1]
    assert torch.allclose(pooled[1], logits[0, :, :2, :2].mean((1, 2)), atol=1e-6)
    assert torch.allclose(pooled[2], logits[0, :, 3, 3])


def test_object_term_adds_to_the_pixel_loss():
    cfg = SyntheticConfig(**SYNTHETIC)
    batch = collate_scenes([scene_to_tensors(render_scene(cfg, "val", i), 64) for i in range(2)])
    with_term, without = _module("tiny", object_loss_weight=1.0), _module("tiny",
                                                                        object_loss_weight=0.0)
    images = batch["image"]
    assert float(with_term._loss(with_term.level_logits(images), batch)) > float(
        without._loss(without.level_logits(images), batch))
