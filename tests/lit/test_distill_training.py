"""CLIP distillation inside training: frozen-teacher discipline, cache, and the smoke run."""

from __future__ import annotations

from types import SimpleNamespace

import hydra
import torch
from helpers import build_module_and_batch, compose_task
from omegaconf import OmegaConf

from region_sam3.tasks import train_task

SMOKE = ["experiment=distill_clip", "debug=smoke", "model.sam3.checkpoint=null",
         "model/sam3=tiny", "model.sam3.strict=false", "logger=csv"]


def test_distill_smoke_run_end_to_end(tmp_path, synthetic_data_dir):
    """`python train.py experiment=distill_clip debug=smoke` (random tiny base for speed)."""
    cfg = compose_task("train", tmp_path, synthetic_data_dir,
                       [*SMOKE, "trainer.limit_train_batches=2"])
    metrics, objects = train_task(cfg)
    module = objects["model"]
    assert {"train/loss_distill_cos", "train/loss_distill_kl"} <= set(metrics)
    assert {"val/distill/cosine", "val/distill/top1", "test/distill/cosine"} <= set(metrics)
    assert -1.0 <= metrics["val/distill/cosine"] <= 1.0
    # frozen-teacher discipline
    assert not module.teacher.training  # fit put the module in train mode; the teacher stayed eval
    assert all(not p.requires_grad for p in module.teacher.parameters())
    teacher_ids = {id(p) for p in module.teacher.parameters()}
    optimizer = objects["trainer"].optimizers[0]
    assert not any(id(p) in teacher_ids for g in optimizer.param_groups for p in g["params"])
    checkpoint = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    assert not any(k.startswith("teacher.") for k in checkpoint["state_dict"])
    assert any(".region_head." in k for k in checkpoint["state_dict"])


def test_teacher_stays_in_eval_mode(tmp_path, synthetic_data_dir):
    cfg = compose_task("train", tmp_path, synthetic_data_dir, SMOKE)
    OmegaConf.resolve(cfg)
    module = hydra.utils.instantiate(cfg.model)
    module.train()
    assert module.net.training and not module.teacher.training
    # a checkpoint without teacher tensors loads back (the teacher is rebuilt from config)
    state = {k: v for k, v in module.state_dict().items() if not k.startswith("teacher.")}
    checkpoint = {"state_dict": state}
    module.on_load_checkpoint(checkpoint)
    module.load_state_dict(checkpoint["state_dict"])


def _cache_run(tmp_path, data_dir, cache_dir, extra=()):
    cfg = compose_task("train", tmp_path, data_dir, [
        *SMOKE, "data.augmentation=null", f"model.teacher_cache_dir={cache_dir}",
        "trainer.limit_train_batches=2", "trainer.max_epochs=2", "test=false",
        "trainer.limit_val_batches=0", "callbacks.model_checkpoint.monitor=null",
        "trainer.log_every_n_steps=1", *extra])
    module, batch = build_module_and_batch(cfg)
    datamodule = hydra.utils.instantiate(cfg.data)  # the cache is keyed by its training split
    module._trainer = SimpleNamespace(datamodule=datamodule)
    module.setup("fit")
    return module, batch


def test_teacher_cache_is_keyed_by_the_training_data(tmp_path, synthetic_data_dir):
    """A cache folder reused for another dataset whose image and annotation ids repeat (here:
    the synthetic `val` split as training data) must not return the first dataset's embeddings.
    Before: the key was (teacher, image id, annotation id) and `other` read `module`'s rows."""
    cache = tmp_path / "cache"
    module, batch = _cache_run(tmp_path, synthetic_data_dir, cache)
    image_id, ann_ids = int(batch.image_ids[0]), [int(a) for a in batch.annotation_ids[:2]]
    module.teacher_cache.put(image_id, ann_ids, torch.ones(2, module.teacher.embed_dim))
    assert module.teacher_cache.get(image_id, ann_ids) is not None
    other, _ = _cache_run(tmp_path, synthetic_data_dir, cache, ["data.train_split=val"])
    assert other.teacher_cache.get(image_id, ann_ids) is None
    assert other.teacher_cache.dir.parent == module.teacher_cache.dir.parent  # same teacher
    again, _ = _cache_run(tmp_path, synthetic_data_dir, cache)  # same data: same entries
    assert again.teacher_cache.get(image_id, ann_ids) is not None


def test_teacher_cache_hits_and_invalidation(tmp_path, synthetic_data_dir):
    cache = tmp_path / "cache"
    module, batch = _cache_run(tmp_path, synthetic_data_dir, cache)
    fresh, valid = module._teacher_embeddings(batch, batch.masks, use_cache=False)
    first, _ = module._teacher_embeddings(batch, batch.masks, use_cache=True)
    assert module.teacher_cache.misses > 0 and module.teacher_cache.hits == 0
    second, _ = module._teacher_embeddings(batch, batch.masks, use_cache=True)
    assert module.teacher_cache.hits == module.teacher_cache.misses
    assert torch.equal(first, second)
    torch.testing.assert_close(first[valid], fresh[valid])
    # a different teacher option -> different hash -> a cold cache
    other, _ = _cache_run(tmp_path, synthetic_data_dir, cache,
                          ["teacher.global_patch_removal=true"])
    assert other.teacher_cache.dir != module.teacher_cache.dir
    other._teacher_embeddings(batch, batch.masks, use_cache=True)
    assert other.teacher_cache.hits == 0 and other.teacher_cache.misses > 0


def test_weighted_distillation_equals_boolean_indexed_version(tmp_path, synthetic_data_dir):
    """`_distillation_losses` (invalid teacher rows weighted 0) gives the values of the previous
    `[keep]`-indexed code on the same matcher output, to 1e-6."""
    import torch.nn.functional as F

    cfg = compose_task("train", tmp_path, synthetic_data_dir, [
        *SMOKE, "data.augmentation=null", "data.batch_size=4", "model.distill.warmup_steps=0"])
    module, batch = build_module_and_batch(cfg)
    module._text_embeds = module.teacher.encode_text(["circle", "square", "triangle"])
    masks = batch.masks.clone()
    masks[1] = False  # an empty GT mask: invalid teacher row
    batch.masks = masks
    num_t = masks.shape[0]
    g = torch.Generator().manual_seed(0)
    target_idx = torch.randperm(num_t, generator=g)
    query_idx = torch.randint(0, 5, (num_t,), generator=g)
    out = {"indices": (batch.target_query_index[target_idx], query_idx, target_idx),
           "region_embed": torch.randn(batch.num_queries, 5, module.teacher.embed_dim, generator=g)}
    new = module._distillation_losses(batch, out)

    teacher, valid = module._teacher_embeddings(batch, masks)
    assert not valid[1] and valid.sum() >= 2, valid
    keep = valid[target_idx]
    student = F.normalize(out["region_embed"][out["indices"][0], out["indices"][1]][keep], dim=-1)
    old = module.distill(student, teacher[target_idx][keep], text_embeds=module._text_embeds,
                         step=module.global_step)
    assert old.keys() == new.keys() and new["loss_distill"] > 0
    for key in old:
        torch.testing.assert_close(new[key], old[key], atol=1e-6, rtol=1e-6)
