"""`model.compile=true`: the base (as sam3's builder compiles it) and the region head are
compiled, and a training step gives the eager losses and gradients (issue 20 item 6)."""

from __future__ import annotations

import pytest
import torch
from helpers import build_module_and_batch, compose_task

OVERRIDES = ["model/sam3=tiny", "model/region_head=default", "data.augmentation=null",
             "model.region_head.iter_loss_weights=null"]


def _step(module, batch):
    module.train()
    losses = module._losses(batch)
    losses["total"].backward()
    grads = {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}
    return {k: v.detach() for k, v in losses.items() if torch.is_tensor(v)}, grads


def test_compile_flag_wraps_the_vit_pixel_decoder_and_region_head(tmp_path, synthetic_data_dir):
    """Cheap: compiling is lazy, nothing runs here."""
    cfg = compose_task("train", tmp_path, synthetic_data_dir, [*OVERRIDES, "model.compile=true"])
    module, _ = build_module_and_batch(cfg)
    net = module.net
    trunk = net.backbone.vision_backbone.trunk
    assert hasattr(trunk.forward, "_torchdynamo_orig_callable")  # sam3's own compile_mode
    assert hasattr(net.segmentation_head.pixel_decoder.forward, "_torchdynamo_orig_callable")
    assert net.segmentation_head.region_head._compiled_call_impl is not None
    eager, _ = build_module_and_batch(compose_task("train", tmp_path, synthetic_data_dir,
                                                   OVERRIDES))
    assert module.state_dict().keys() == eager.state_dict().keys()  # checkpoints unchanged


@pytest.mark.slow
def test_compiled_training_step_matches_eager(tmp_path, synthetic_data_dir):
    cfg = compose_task("train", tmp_path, synthetic_data_dir, OVERRIDES)
    eager, batch = build_module_and_batch(cfg)
    compiled, _ = build_module_and_batch(
        compose_task("train", tmp_path, synthetic_data_dir, [*OVERRIDES, "model.compile=true"]))
    compiled.load_state_dict(eager.state_dict())
    torch.manual_seed(0)
    losses, grads = _step(eager, batch)
    torch.manual_seed(0)
    c_losses, c_grads = _step(compiled, batch)
    assert losses.keys() == c_losses.keys() and grads.keys() == c_grads.keys() and grads
    for key in losses:
        torch.testing.assert_close(c_losses[key], losses[key], rtol=1e-4, atol=1e-5)
    for name in grads:
        torch.testing.assert_close(c_grads[name], grads[name], rtol=1e-3, atol=1e-5)
