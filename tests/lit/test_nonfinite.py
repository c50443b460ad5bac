"""Non-finite loss helpers (`lit/nonfinite.py`) without a process group (fast)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from region_sam3.lit.nonfinite import (
    NonFiniteLossError,
    SkipCounter,
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


def test_skip_counter_caps_consecutive_skips_and_resets_on_a_finite_step():
    counter = SkipCounter(cap=2)
    counter.skip("a")
    counter.skip("b")
    counter.finite()
    counter.skip("c")
    counter.skip("d")
    with pytest.raises(NonFiniteLossError, match=r"^e; 3 consecutive .*=2 \(5 skipped in all\)"):
        counter.skip("e")
    assert counter.state_dict() == {"total": 5, "consecutive": 3}
    unlimited = SkipCounter(cap=None)
    for _ in range(100):
        unlimited.skip("x")
    with pytest.raises(NonFiniteLossError):
        SkipCounter(cap=0).skip("never skip")
    for bad in (-1, 1.5, True, "3"):
        with pytest.raises(ValueError, match="max_consecutive_nonfinite_skips"):
            SkipCounter(cap=bad)


def test_skip_counter_state_round_trip_and_old_checkpoints():
    counter = SkipCounter(cap=3, total=7, consecutive=2)
    restored = SkipCounter(cap=3)
    restored.load_state_dict(counter.state_dict())
    assert restored == counter
    restored.load_state_dict(None)  # a checkpoint from before the counts were saved
    assert (restored.total, restored.consecutive) == (0, 0)


def test_cap_is_reached_at_the_same_step_on_every_rank():
    """Rank 1 stays NaN, rank 0 is finite: both see the same gathered flags, so both counters
    hit the cap at the same step (nobody is left waiting in a collective)."""
    counters = [SkipCounter(cap=2), SkipCounter(cap=2)]
    raised_at: dict[int, int] = {}
    flags = torch.tensor([[0.0], [1.0]])  # what the all-gather returns on both ranks, always
    for step in range(5):
        for rank, counter in enumerate(counters):
            if rank in raised_at:
                continue
            check = check_losses(_losses(NAN if rank == 1 else 1.0), lambda flag: flags)
            assert check.bad_ranks == (1,)
            try:
                counter.skip(check.describe(step, step, rank))
            except NonFiniteLossError:
                raised_at[rank] = step
    assert raised_at == {0: 2, 1: 2}
