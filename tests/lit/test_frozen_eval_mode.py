"""Frozen means frozen: fully frozen SAM3 modules stay in eval mode through `trainer.fit`, and
the DAC one-to-many queries of a frozen decoder bypass the head unless asked for."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from helpers import build_module_and_batch, compose_task

from region_sam3.data.sam3_adapter import to_sam3_batch
from region_sam3.lit.module import final_output
from region_sam3.models.freeze import eval_frozen_modules, fully_frozen_modules

# Tiny SAM3 with the official model's dropout 0.1 / drop-path 0.1, everything frozen but the
# region head (whose own dropout is on too, so a head in train mode is observable).
NOISY_FROZEN = [
    "model/sam3=tiny",
    "model/region_head=default",
    "model.sam3.arch.dropout=0.1",
    "model.sam3.arch.vit_drop_path_rate=0.1",
    "model.region_head.dropout=0.1",
    "model.region_head.iter_loss_weights=null",
    "model.sam3.freeze=[backbone.*,transformer.*,geometry_encoder.*,dot_prod_scoring.*,"
    "segmentation_head.pixel_decoder.*,segmentation_head.instance_seg_head.*,"
    "segmentation_head.semantic_seg_head.*,segmentation_head.cross_attend_prompt.*,"
    "segmentation_head.cross_attn_norm.*,segmentation_head.mask_predictor.*]",
    "data.augmentation=null",
]


def _module(tmp_path, data_dir, overrides=()):
    cfg = compose_task("train", tmp_path, data_dir, [*NOISY_FROZEN, *overrides])
    return build_module_and_batch(cfg)


def _base_outputs(module, batch) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        out = final_output(module.net(to_sam3_batch(batch, "cpu")))
    return {k: out[k].clone() for k in ("pred_logits", "pred_boxes", "pred_masks_iter0")}


@pytest.mark.parametrize("rule", [True, False])
def test_frozen_base_is_deterministic_in_training_mode(rule, tmp_path, synthetic_data_dir):
    module, batch = _module(tmp_path, synthetic_data_dir, [f"model.frozen_eval_mode={rule}"])
    module.train()
    first, second = _base_outputs(module, batch), _base_outputs(module, batch)
    same = all(torch.equal(first[k], second[k]) for k in first)
    # Without the rule the frozen base runs dropout/drop-path: the control shows the test can fail.
    assert same is rule, {k: float((first[k] - second[k]).abs().max()) for k in first}
    assert module.net.segmentation_head.region_head.training
    assert module.net.training  # the root keeps the training task (matching, DAC)
    assert module.net.segmentation_head.training  # mixed module: follows the trainable part
    assert module.net.backbone.training is not rule
    assert module.net.transformer.decoder.training is not rule


def test_mixed_modules_and_parameter_free_children():
    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout(0.5),
                              torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout(0.5)),
                              torch.nn.Linear(2, 2))  # net[3] trains: the root is mixed
    net[0].weight.requires_grad_(False)  # net[0] is mixed: its bias trains
    for p in net[2].parameters():
        p.requires_grad_(False)
    assert [name for name, _ in fully_frozen_modules(net)] == ["2"]
    net[0].bias.requires_grad_(False)
    assert [name for name, _ in fully_frozen_modules(net)] == ["0", "2"]
    net.train()
    assert eval_frozen_modules(net) == ["0", "2"]
    # a fully frozen root keeps its (task) mode; its children go to eval
    net[3].requires_grad_(False)
    assert [name for name, _ in fully_frozen_modules(net)] == [""]
    net.train()
    assert eval_frozen_modules(net) == ["0", "2", "3"] and net.training and net[1].training
    net[3].requires_grad_(True)
    net.train()
    eval_frozen_modules(net)
    # parameter-free modules follow their parent: net[1] under the (mixed) root keeps training
    assert net.training and net[1].training and net[3].training
    assert not net[2][1].training and not net[0].training


@pytest.mark.slow
def test_modes_hold_through_fit_and_validation(tmp_path, synthetic_data_dir):
    module, batch = _module(tmp_path, synthetic_data_dir)
    seen: list[tuple[bool, bool, bool]] = []

    class RecordModes(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, *_):
            seg = pl_module.net.segmentation_head
            seen.append((pl_module.net.backbone.training, seg.pixel_decoder.training,
                         seg.region_head.training))

    loader = torch.utils.data.DataLoader([batch, batch], batch_size=None, collate_fn=lambda b: b)
    trainer = L.Trainer(accelerator="cpu", max_steps=2, val_check_interval=1,
                        limit_val_batches=1, num_sanity_val_steps=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[RecordModes()])
    module.configure_optimizers = lambda: torch.optim.SGD(
        [p for p in module.parameters() if p.requires_grad], lr=1e-3)
    trainer.fit(module, train_dataloaders=loader, val_dataloaders=loader)
    # step 1 after the sanity validation, step 2 after a validation run: frozen parts in eval
    assert seen == [(False, False, True)] * 2


@pytest.mark.parametrize(("flag", "freeze_decoder", "expect_o2m"),
                         [(False, True, False), (True, True, True), (False, False, True)])
def test_o2m_queries_reach_the_head_only_when_asked(flag, freeze_decoder, expect_o2m, tmp_path,
                                                    synthetic_data_dir):
    overrides = [f"model.frozen_decoder_o2m_masks={flag}"]
    if not freeze_decoder:
        overrides.append("model.sam3.unfreeze=[transformer.decoder.*]")
    module, batch = _module(tmp_path, synthetic_data_dir, overrides)
    num_o2o = module.net.transformer.decoder.num_queries
    head_queries = []
    module.net.segmentation_head.region_head.register_forward_hook(
        lambda mod, args, kwargs, out: head_queries.append(kwargs["queries"].shape[1]),
        with_kwargs=True)
    module.train()
    losses = module._losses(batch)
    assert head_queries == [2 * num_o2o if expect_o2m else num_o2o]
    assert any(k.startswith("loss_mask") and k.endswith("_o2m") for k in losses) is expect_o2m
    assert "loss_ce_o2m" in losses  # the decoder's o2m box/class terms are untouched
