"""`recompute_activations=False`: no checkpointed recomputation, identical losses and gradients."""

from __future__ import annotations

import sam3.model.decoder as sam3_decoder
import sam3.model.encoder as sam3_encoder
import torch
from helpers import build_tiny_sam3, make_find_batch
from sam3.model.act_ckpt_utils import activation_ckpt_wrapper

from region_sam3.losses.sam3_criterion import Sam3Criterion


def _step(model, batch, recompute: bool, monkeypatch):
    calls = []
    real = torch.utils.checkpoint.checkpoint
    monkeypatch.setattr(torch.utils.checkpoint, "checkpoint",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    model.recompute_activations = recompute
    torch.manual_seed(0)
    out = model(batch)
    losses = Sam3Criterion(num_sample_points=64)(
        out, [model.back_convert(t) for t in batch.find_targets])
    model.zero_grad(set_to_none=True)
    losses["total"].backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return losses["total"].detach(), grads, len(calls)


def test_no_recomputation_same_losses_and_gradients(monkeypatch):
    model = build_tiny_sam3().train()
    batch = make_find_batch()
    total, grads, checkpointed = _step(model, batch, True, monkeypatch)
    total_off, grads_off, checkpointed_off = _step(model, batch, False, monkeypatch)
    assert checkpointed > 0 and checkpointed_off == 0
    torch.testing.assert_close(total_off, total)
    assert grads.keys() == grads_off.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(grads_off[name], grad, rtol=1e-5, atol=1e-7, msg=name)
    # the swap is scoped to the forward: sam3's modules see their own wrapper again
    assert sam3_encoder.activation_ckpt_wrapper is activation_ckpt_wrapper
    assert sam3_decoder.activation_ckpt_wrapper is activation_ckpt_wrapper
