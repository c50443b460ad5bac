"""Training skips negatives in the segmentation head: same losses and gradients, fewer rows."""

from __future__ import annotations

import pytest
import torch
from helpers import build_module_and_batch, compose_task

from region_sam3.data.sam3_adapter import to_sam3_batch

OVERRIDES = ["model/sam3=tiny", "model.sam3.checkpoint=null", "model.sam3.strict=false",
             "model.sam3.freeze=[]", "model/region_head=default", "data.negative_ratio=2",
             "data.max_queries_per_image=4", "data.augmentation=null"]


@pytest.fixture(scope="module")
def module_and_batch(tmp_path_factory, synthetic_data_dir):
    out = tmp_path_factory.mktemp("skip")
    module, batch = build_module_and_batch(compose_task("train", out, synthetic_data_dir,
                                                        OVERRIDES))
    assert module.net.seg_head_positives_only  # config default
    assert 0 < int(batch.is_negative.sum()) < batch.num_queries  # the batch mixes both kinds
    return module.train(), batch


def _step(module, batch, skip: bool):
    """(losses, gradients, find-query rows seen by the pixel decoder) of one training step."""
    rows = []
    hook = module.net.segmentation_head.pixel_decoder.register_forward_hook(
        lambda _m, args, _out: rows.append(args[0][-1].shape[0]))
    module.net.seg_head_positives_only = skip
    try:
        torch.manual_seed(0)  # point sampling draws the same points in both runs
        sam3_batch = to_sam3_batch(batch, "cpu")
        outputs = module.net(sam3_batch)
        losses = module.criterion(outputs, [module.net.back_convert(t)
                                            for t in sam3_batch.find_targets])
        module.zero_grad(set_to_none=True)
        losses["total"].backward()
    finally:
        hook.remove()
        module.net.seg_head_positives_only = True
    grads = {n: p.grad.clone() for n, p in module.net.named_parameters() if p.grad is not None}
    return losses, grads, rows


@pytest.mark.slow  # two full training steps of the tiny model with the region head
def test_losses_and_gradients_unchanged_with_fewer_rows(module_and_batch):
    module, batch = module_and_batch
    full_losses, full_grads, full_rows = _step(module, batch, skip=False)
    skip_losses, skip_grads, skip_rows = _step(module, batch, skip=True)
    positives = int((~batch.is_negative).sum())
    assert full_rows == [batch.num_queries] and skip_rows == [positives]
    assert "loss_mask_iter2" in full_losses  # the region head's deep supervision is covered
    assert full_losses.keys() == skip_losses.keys()
    for key, value in full_losses.items():
        torch.testing.assert_close(skip_losses[key], value, rtol=1e-5, atol=1e-6, msg=key)
    assert full_grads.keys() == skip_grads.keys()
    assert any(".pixel_decoder." in n for n in skip_grads)
    # Gradients summed over fewer rows (e.g. the per-query gather of image features) add up in
    # another order: float round-off, measured against the gradient's overall scale.
    scale = max(float(g.abs().max()) for g in full_grads.values())
    for name, grad in full_grads.items():
        error = float((skip_grads[name] - grad).abs().max())
        assert error <= 1e-5 * scale, (name, error, scale)
    flat = torch.cat([g.flatten() for g in full_grads.values()])
    flat_skip = torch.cat([skip_grads[n].flatten() for n in full_grads])
    assert float((flat_skip - flat).norm() / flat.norm()) < 1e-5


def test_evaluation_runs_every_prompt(module_and_batch):
    module, batch = module_and_batch
    rows = []
    hook = module.net.segmentation_head.pixel_decoder.register_forward_hook(
        lambda _m, args, _out: rows.append(args[0][-1].shape[0]))
    try:
        module.eval()
        with torch.no_grad():
            out = module(batch)
    finally:
        hook.remove()
        module.train()
    assert rows == [batch.num_queries]
    negatives = batch.is_negative.nonzero(as_tuple=True)[0]
    assert out["pred_masks"][negatives].abs().sum() > 0  # real masks, not the training zeros


def test_semantic_loss_turns_the_skip_off(tmp_path):
    import hydra
    from omegaconf import OmegaConf

    cfg = compose_task("train", tmp_path, tmp_path, [*OVERRIDES, "model.criterion.semantic_seg=20"])
    OmegaConf.resolve(cfg)
    assert not hydra.utils.instantiate(cfg.model).net.seg_head_positives_only


def test_seg_head_rows_hint_context_restores_on_error() -> None:
    """The host-row hint lives only inside the block, even when the forward raises."""
    import torch.nn as nn

    from region_sam3.models.sam3_image import Sam3ImageModel, seg_head_rows_hint

    class Net(nn.Module):
        seg_head_rows_hint = Sam3ImageModel.seg_head_rows_hint

    net = Net()
    rows = torch.tensor([0, 2])
    with pytest.raises(RuntimeError, match="boom"), seg_head_rows_hint(net, rows):
        assert net.seg_head_rows_hint is rows
        raise RuntimeError("boom")
    assert net.seg_head_rows_hint is None
    plain = nn.Linear(1, 1)  # no hint attribute: left untouched
    with seg_head_rows_hint(plain, rows):
        assert not hasattr(plain, "seg_head_rows_hint")
    with seg_head_rows_hint(net, None):
        assert net.seg_head_rows_hint is None
