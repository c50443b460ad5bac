"""Non-finite loss helpers (`lit/nonfinite.py`) without a process group (fast)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from region_sam3.lit.nonfinite import (
    check_losses,
    drop_gradients,
    gather_rank_flags,
    zero_loss_for_skipped_step,
)

NAN = float("nan")


def _losses(dice: float = 1.0) -> dict:
    return {"loss_ce": torch.tensor(0.5), "loss_dice": torch.tensor(dice),
            "total": torch.tensor(0.5 + dice), "not_a_scalar": torch.ones(3), "name": "x"}


def test_finite_losses_on_every_rank_pass():
    check = check_losses(_losses(), lambda flag: torch.cat([flag, torch.zeros(1)])[:, None])
    assert not check.bad and check.bad_ranks == () and check.local_terms == ()


def test_a_bad_rank_elsewhere_flags_this_finite_rank_too():
    """The decision is collective: rank 0 (finite) learns that rank 1 went NaN."""
    check = check_losses(_losses(), lambda flag: torch.stack([flag, torch.ones(1)]))
    assert check.bad and check.bad_ranks == (1,) and check.local_terms == ()
    assert "rank(s) [1]; rank 0 is finite" in check.describe(step=7, batch_idx=3, rank=0)


def test_local_nonfinite_terms_are_named():
    check = check_losses(_losses(dice=NAN))  # single process: no process group
    assert check.bad_ranks == (0,)
    assert check.local_terms == ("loss_dice", "total")
    assert "global step 2 (batch 5)" in check.describe(step=2, batch_idx=5, rank=0)
    assert gather_rank_flags(torch.ones(1)).shape == (1, 1)


@pytest.mark.parametrize("corrupt", [False, True])
def test_zero_loss_reaches_every_trainable_parameter_with_zero_gradient(corrupt):
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    model[0].bias.requires_grad_(False)
    if corrupt:  # even a NaN weight gives a loss of exactly 0 and zero gradients
        with torch.no_grad():
            model[1].weight[0, 0] = NAN
    loss = zero_loss_for_skipped_step(model)
    loss.backward()
    assert loss.shape == () and loss.item() == 0.0
    for name, param in model.named_parameters():
        if param.requires_grad:
            assert param.grad is not None and not param.grad.any(), name
        else:
            assert param.grad is None, name


@pytest.mark.parametrize("drop", [False, True])
def test_dropped_gradients_make_adamw_a_no_op(drop):
    """Zero gradients are not a skipped step: AdamW's moments and decay still move weights."""
    torch.manual_seed(0)
    model = nn.Linear(4, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1, weight_decay=0.1)
    model(torch.randn(3, 4)).sum().backward()
    optimizer.step()  # a normal step fills the moments
    before = [p.detach().clone() for p in model.parameters()]
    optimizer.zero_grad()
    zero_loss_for_skipped_step(model).backward()
    if drop:
        drop_gradients(optimizer)
    optimizer.step()
    moved = any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    steps = {int(s["step"]) for s in optimizer.state.values()}
    assert moved != drop and steps == ({1} if drop else {2})
