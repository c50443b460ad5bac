"""Ablation baselines (LoRA, HQ token, mask-head fine-tune): exact at init, trainable budget,
frozen base stays frozen, checkpoint keys unchanged."""

from __future__ import annotations

import pytest
import torch
from helpers import build_tiny_sam3, compose_task, last_stage_output, make_find_batch

from region_sam3.models.baselines import UnfreezeBaseline, count_params, region_head_budget
from region_sam3.models.hq_token import HQTokenBaseline
from region_sam3.models.lora import LoraBaseline, lora_params_per_rank, official_key

FROZEN = ("backbone.", "transformer.", "geometry_encoder.", "dot_prod_scoring.",
          "segmentation_head.")


def _frozen_tiny(config: str = "tiny", **arch):
    from helpers import compose_sam3
    from hydra.utils import instantiate

    overrides = [f"arch.{k}={v}" for k, v in arch.items()]
    torch.manual_seed(0)
    model = build_tiny_sam3(overrides) if config == "tiny" else instantiate(
        compose_sam3(config, overrides))
    for name, p in model.named_parameters():
        p.requires_grad_(not name.startswith(FROZEN))
    return model


def _masks(model, batch):
    with torch.no_grad():
        return last_stage_output(model(batch))["pred_masks"]


def test_region_head_budget_matches_the_head():
    assert region_head_budget(64) == 190_848
    assert region_head_budget(256) == 1_448_448


def test_lora_exact_at_init_budget_and_frozen_base():
    model = _frozen_tiny().eval()
    batch = make_find_batch()
    ref = _masks(model, batch)
    keys = set(model.state_dict())
    values = {k: v.clone() for k, v in model.state_dict().items()}
    assert count_params(model) == 0
    baseline = LoraBaseline()
    r, expected, budget = baseline.rank_for(model)
    assert lora_params_per_rank(model, baseline.target_modules) == 3712
    assert (r, budget) == (51, 190_848)
    baseline(model)
    # zero-initialised lora_B: outputs are SAM3's exactly
    assert torch.equal(_masks(model, batch), ref)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_" in n for n in trainable)
    assert count_params(model) == expected == 51 * 3712
    assert abs(expected - budget) / budget < 0.01
    # base tensors keep their official names (up to peft's `.base_layer`) and values
    state = model.state_dict()
    base = {official_key(k): v for k, v in state.items() if ".lora_" not in k}
    assert set(base) == keys
    assert all(torch.equal(base[k], values[k]) for k in keys)
    # trained LoRA changes the masks and gets gradients on the decoder and the mask head
    model.train()
    last_stage_output(model(batch))["pred_masks"].sum().backward()
    grads = {n for n, p in model.named_parameters() if p.grad is not None}
    assert any(n.startswith("transformer.decoder") for n in grads)
    assert any(n.startswith("segmentation_head.pixel_decoder") for n in grads)
    assert grads <= trainable


def test_lora_keeps_trainable_region_head_trainable_and_explicit_rank():
    model = _frozen_tiny()
    head_param = next(iter(model.segmentation_head.mask_predictor.parameters()))
    head_param.requires_grad_(True)  # something trainable before injection stays trainable
    LoraBaseline(r=2)(model)
    assert head_param.requires_grad
    assert count_params(model) == 2 * 3712 + head_param.numel()


def test_lora_bad_pattern_is_a_clear_error():
    with pytest.raises(ValueError, match="target_modules"):
        LoraBaseline(target_modules=r"no\.such\.module")(_frozen_tiny())


@pytest.mark.parametrize(("config", "act_ckpt"), [("tiny", False), ("tiny", True),
                                                  ("tiny_p7_stem", False)])
def test_hq_token_exact_at_init_and_trains(config: str, act_ckpt: bool):
    # tiny_p7_stem (the shipped base's arch): its ViT grid (32^2) is twice its last neck level,
    # which the fusion once added without resizing (issue 22: the baseline crashed)
    model = _frozen_tiny(config, use_act_checkpoint=act_ckpt).eval()
    batch = make_find_batch()
    ref = _masks(model, batch)
    keys = set(model.state_dict())
    HQTokenBaseline()(model)
    hq = model.segmentation_head.hq_token
    assert torch.equal(_masks(model, batch), ref)  # zero-initialised last hf_mlp layer
    new = set(model.state_dict()) - keys
    assert new and all(k.startswith("segmentation_head.hq_token.") for k in new)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {
        f"segmentation_head.hq_token.{n}" for n, _ in hq.named_parameters()}
    assert count_params(model) == count_params(hq)
    if config == "tiny":
        assert count_params(hq) == 50_816
    # training forward/backward (with the head's activation checkpointing: recomputed in
    # backward without the ViT) reaches every fusion branch
    model.train()
    torch.nn.init.normal_(hq.hf_mlp.layers[-1].weight, std=0.1)
    last_stage_output(model(batch))["pred_masks"].square().mean().backward()
    for branch in ("compress_vit_feat", "embedding_encoder", "embedding_maskfeature", "hf_token"):
        grads = [p.grad for n, p in hq.named_parameters() if n.startswith(branch)]
        assert all(g is not None and g.abs().sum() > 0 for g in grads), branch
    model.eval()
    assert not torch.allclose(_masks(model, batch), ref)


def test_mask_head_finetune_unfreezes_only_the_segmentation_head():
    model = _frozen_tiny()
    UnfreezeBaseline()(model)
    expected = count_params(model.segmentation_head, trainable_only=False)
    assert count_params(model) == expected == 144_641
    with pytest.raises(ValueError, match="matches no parameter"):
        UnfreezeBaseline(patterns=["nope.*"])(model)


@pytest.mark.parametrize("baseline", ["lora", "hq_token", "mask_head"])
def test_baselines_build_from_config_on_the_shipped_base(tmp_path, synthetic_data_dir, baseline):
    """The shipped checkpoint still loads strictly; T=0 + baseline trains only the baseline."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    cfg = compose_task("train", tmp_path, synthetic_data_dir, [
        "experiment=region_head", "model.region_head.num_iters=0", f"model/baseline={baseline}"])
    OmegaConf.resolve(cfg)
    module = instantiate(cfg.model)
    names = {n for n, p in module.named_parameters() if p.requires_grad}
    marker = {"lora": ".lora_", "hq_token": ".hq_token.", "mask_head": "segmentation_head."}
    assert names and all(marker[baseline] in n for n in names)
    assert module.trainable_params() == sum(
        p.numel() for p in module.parameters() if p.requires_grad)
